/* VXLAN: parsing the outer headers, and putting them on and taking them off a frame. A second
 * tunnel type (or an IPv6 underlay) is a second file like this one. */
#ifndef XMASQ_ENCAP_H
#define XMASQ_ENCAP_H

#include "parse.h"

#define VXLAN_FLAG_VNI 0x08000000

struct vxlanhdr {
    __be32 flags;
    __be32 vni; /* VNI in the upper 24 bits */
};

/* The VXLAN header of an outer IPv4/UDP packet to `port`, or NULL. */
static __always_inline struct vxlanhdr *parse_vxlan(struct iphdr *outer, void *data_end, __u16 port,
                                                    struct udphdr **udp_out)
{
    struct udphdr *udp = (void *)(outer + 1);
    struct vxlanhdr *vx = (void *)(udp + 1);
    if (outer->protocol != IPPROTO_UDP || (void *)(vx + 1) > data_end)
        return NULL;
    if (udp->dest != bpf_htons(port) || !(vx->flags & bpf_htonl(VXLAN_FLAG_VNI)))
        return NULL;
    *udp_out = udp;
    return vx;
}

/* A VXLAN packet on the underlay: outer IPv4/UDP/VXLAN around an inner Ethernet frame with an
 * IPv4 or IPv6 packet. */
struct vxlan_pkt {
    struct iphdr *outer;
    struct udphdr *udp;
    __u32 vni;
    struct ethhdr *inner_eth;
    struct l3 inner;
};

/* Fills pkt from the outer IPv4 header `outer` on; 0, or -1 when it is not such a packet (or
 * is truncated). */
static __always_inline int parse_vxlan_at(struct iphdr *outer, void *data_end, __u16 port, struct vxlan_pkt *pkt)
{
    pkt->outer = outer;
    struct vxlanhdr *vx = outer ? parse_vxlan(outer, data_end, port, &pkt->udp) : NULL;
    if (!vx)
        return -1;
    pkt->vni = bpf_ntohl(vx->vni) >> 8;
    pkt->inner_eth = (void *)(vx + 1);
    return parse_l3(pkt->inner_eth, data_end, &pkt->inner);
}

/* A plain network's VXLAN in an Ethernet frame (the NIC). */
static __always_inline int parse_vxlan_pkt(void *data, void *data_end, struct vxlan_pkt *pkt)
{
    return parse_vxlan_at(parse_ipv4(data, data_end), data_end, VXLAN_PORT, pkt);
}

/* An encrypted network's VXLAN on the WireGuard device (L3: the packet starts at its IPv4 header). */
static __always_inline int parse_encrypted_vxlan_pkt(void *data, void *data_end, struct vxlan_pkt *pkt)
{
    return parse_vxlan_at(ipv4_at(data, data_end), data_end, ENCRYPTED_VXLAN_PORT, pkt);
}

#define ENCAP_FLAGS                                                                                          \
    (BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |                  \
     BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN))

/* What push_outer and pop_outer return when they fail. */
#define ENCAP_UNCHANGED -1 /* the packet is as it was: the slow path can take it */
#define ENCAP_BROKEN -2    /* the packet is half changed: it must be dropped */

/* The tunnel's outer headers in front of the container's frame, with this packet's lengths and
 * checksum and the flow's UDP source port. 0, or ENCAP_UNCHANGED / ENCAP_BROKEN. */
static __always_inline int push_outer(struct __sk_buff *skb, struct tunnel *t, __be16 sport)
{
    __u32 len = skb->len;
    if (bpf_skb_adjust_room(skb, OUTER_LEN, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS))
        return ENCAP_UNCHANGED;
    /* The room went in after the container's Ethernet header: that header moves behind it as
     * the inner one, and the outer headers go in front. Written in place (the helper calls of
     * load/store_bytes cost more than the copy). */
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    if (data + OUTER_LEN + ETH_HLEN > data_end)
        return ENCAP_BROKEN;
    __builtin_memcpy(data + OUTER_LEN, data, ETH_HLEN);
    __builtin_memcpy(data, t->hdr, OUTER_LEN);
    struct iphdr *ip = data + ETH_HLEN;
    struct udphdr *udp = (void *)(ip + 1);
    ip->tot_len = bpf_htons(len + OUTER_LEN - ETH_HLEN);
    ip->check = 0;
    ip->check = ipv4_csum(ip);
    udp->len = bpf_htons(len + OUTER_LEN - ETH_HLEN - sizeof(struct iphdr));
    udp->source = sport;
    udp->check = 0;
    return 0;
}

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8) /* Linux 6.3; older headers lack it */
#endif

/* The outer headers off a VXLAN packet whose inner Ethernet header is at inner_eth: removes
 * the bytes after the outer Ethernet header, which is then overwritten with the inner one in
 * place (bpf_skb_store_bytes cost 50 ns more per packet; FIXED_GSO keeps the GSO size as it was). An IPv6 inner packet also needs skb->protocol
 * changed from the outer IPv4 (bpf_redirect_peer hands the skb on without parsing its Ethernet
 * header again): DECAP_L3_IPV6, which kernels before 6.3 refuse, so there the slow path keeps
 * such packets. 0, or ENCAP_UNCHANGED / ENCAP_BROKEN. */
static __always_inline int pop_outer(struct __sk_buff *skb, struct ethhdr *inner_eth)
{
    __u8 eth[ETH_HLEN];
    __builtin_memcpy(eth, inner_eth, ETH_HLEN);
    __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
    if (inner_eth->h_proto == bpf_htons(ETH_P_IPV6))
        flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
    if (bpf_skb_adjust_room(skb, -OUTER_LEN, BPF_ADJ_ROOM_MAC, flags))
        return ENCAP_UNCHANGED;
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    if (data + ETH_HLEN > data_end)
        return ENCAP_BROKEN;
    __builtin_memcpy(data, eth, ETH_HLEN);
    return 0;
}

#endif
