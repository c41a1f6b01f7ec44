/* Packet parsing shared by the hooks (the VXLAN headers: encap.h). Everything is bounds-checked
 * for the verifier; anything unusual (IPv4 options or fragments, IPv6 extension headers, which
 * include the fragment header; other protocols) is "unparsed" and left to the slow path. */
#ifndef XMASQ_PARSE_H
#define XMASQ_PARSE_H

#include <uapi/linux/ipv6.h>

#include "common.h"

/* An outer (underlay) header at `at`: IPv4 without options or fragments, or NULL. */
static __always_inline struct iphdr *ipv4_at(void *at, void *data_end)
{
    struct iphdr *ip = at;
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
        return NULL;
    return ip;
}

/* The same after an Ethernet header. */
static __always_inline struct iphdr *parse_ipv4(struct ethhdr *eth, void *data_end)
{
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return NULL;
    return ipv4_at(eth + 1, data_end);
}

/* A container's packet, IPv4 or IPv6, as the keys see it. */
struct l3 {
    __u8 src[ADDR_LEN];
    __u8 dst[ADDR_LEN];
    __u8 proto;
    void *l4; /* the upper-layer header */
};

/* Fills l3 from the frame at eth; 0, or -1 if it is not a packet the fast path carries. */
static __always_inline int parse_l3(struct ethhdr *eth, void *data_end, struct l3 *l3)
{
    struct iphdr *ip = parse_ipv4(eth, data_end);
    if (ip) {
        addr_of_ipv4(l3->src, ip->saddr);
        addr_of_ipv4(l3->dst, ip->daddr);
        l3->proto = ip->protocol;
        l3->l4 = ip + 1;
        return 0;
    }
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
        return -1;
    if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP && ip6->nexthdr != IPPROTO_ICMPV6)
        return -1;
    __builtin_memcpy(l3->src, &ip6->saddr, ADDR_LEN);
    __builtin_memcpy(l3->dst, &ip6->daddr, ADDR_LEN);
    l3->proto = ip6->nexthdr;
    l3->l4 = ip6 + 1;
    return 0;
}

/* Fill the flow key seen from the local side; `local_is_src` says which address is local.
 * TCP and UDP contribute ports; everything else has ports 0. Returns 0, or -1 if truncated. */
static __always_inline int flow_key_of(struct l3 *l3, void *data_end, __u32 vni, int local_is_src,
                                       struct flow_key *key)
{
    __be16 sport = 0, dport = 0;
    if (l3->proto == IPPROTO_TCP || l3->proto == IPPROTO_UDP) {
        __be16 *ports = l3->l4;
        if ((void *)(ports + 2) > data_end)
            return -1;
        sport = ports[0];
        dport = ports[1];
    }
    __builtin_memset(key, 0, sizeof(*key));
    key->vni = vni;
    key->proto = l3->proto;
    __builtin_memcpy(key->local, local_is_src ? l3->src : l3->dst, ADDR_LEN);
    __builtin_memcpy(key->remote, local_is_src ? l3->dst : l3->src, ADDR_LEN);
    key->lport = local_is_src ? sport : dport;
    key->rport = local_is_src ? dport : sport;
    return 0;
}

static __always_inline __u16 ipv4_csum(struct iphdr *ip)
{
    __u32 sum = 0;
    __u16 *w = (__u16 *)ip;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

#endif
