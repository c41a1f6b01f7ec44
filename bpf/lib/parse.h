/* Packet parsing shared by the hooks (the VXLAN headers: encap.h). Everything is bounds-checked
 * for the verifier; anything unusual (IP options, fragments, non-IPv4) is "unparsed" and left
 * to the slow path. */
#ifndef XMASQ_PARSE_H
#define XMASQ_PARSE_H

#include "common.h"

static __always_inline struct iphdr *parse_ipv4(struct ethhdr *eth, void *data_end)
{
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return NULL;
    if ((void *)(ip + 1) > data_end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
        return NULL;
    return ip;
}

/* Fill the flow key seen from the local side; `local_is_src` says which address is local.
 * TCP and UDP contribute ports; everything else has ports 0. Returns 0, or -1 if truncated. */
static __always_inline int flow_key_of(struct iphdr *ip, void *data_end, __u32 vni, int local_is_src,
                                       struct flow_key *key)
{
    __be16 sport = 0, dport = 0;
    if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
        __be16 *ports = (void *)(ip + 1);
        if ((void *)(ports + 2) > data_end)
            return -1;
        sport = ports[0];
        dport = ports[1];
    }
    __builtin_memset(key, 0, sizeof(*key));
    key->vni = vni;
    key->proto = ip->protocol;
    key->local = local_is_src ? ip->saddr : ip->daddr;
    key->remote = local_is_src ? ip->daddr : ip->saddr;
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
