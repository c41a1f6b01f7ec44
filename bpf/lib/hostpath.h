/* What the programs on the devices that carry VXLAN between hosts share: the NIC (bpf_nic.c) and
 * the WireGuard device of encrypted networks (bpf_tun.c). Learning from what the kernel's vxlan
 * device sent; where a packet from another host may go straight to; handing it there. */
#ifndef XMASQ_HOSTPATH_H
#define XMASQ_HOSTPATH_H

#include "encap.h"
#include "flow.h"
#include "stats.h"

/* A packet from a local endpoint to a remote one of its network, sent to that endpoint's host
 * the way its network goes (`t->encrypted`: through the tunnel, else the NIC): `t` (the caller's
 * outer headers and device) becomes the tunnel for (host, vni), and the flow is marked as
 * carried out by the slow path, with its UDP source port. Always TC_ACT_OK. */
static __always_inline int learn_out(struct vxlan_pkt *pkt, void *data_end, struct tunnel *t)
{
    struct flow_key key;
    if (flow_key_of(&pkt->inner, data_end, pkt->vni, 1, &key))
        return TC_ACT_OK;
    struct ep_key src, dst;
    ep_key_of(&src, pkt->vni, pkt->inner.src);
    ep_key_of(&dst, pkt->vni, pkt->inner.dst);
    struct remote_ep *peer = remote_eps.lookup(&dst);
    if (!local_eps.lookup(&src) || !peer || peer->host != pkt->outer->daddr || peer->encrypted != t->encrypted)
        return TC_ACT_OK;
    /* Overwrite, never insert-only: next-hop MAC, TTL or device may change. */
    struct tunnel_key tk = {.host = pkt->outer->daddr, .vni = pkt->vni};
    tunnels.update(&tk, t);
    count(STAT_LEARN_TUNNEL, 1);
    struct flow zero = {};
    struct flow *f = flows.lookup_or_try_init(&key, &zero);
    if (f) {
        if (!f->seen_out)
            count(STAT_LEARN_OUT, 1);
        f->seen_out = 1;
        f->sport = pkt->udp->source;
        f->host = peer->host;
        f->encrypted = peer->encrypted;
        f->ifindex = 0;
    }
    return TC_ACT_OK;
}

/* The veth a VXLAN packet from another host may go straight to: from a remote endpoint of its
 * network on that very host, to a local endpoint, on an established flow (*f). `encrypted`: it came
 * out of the tunnel, so it must be an encrypted network's. Returns the ifindex; 0 on a miss (counted;
 * the slow path takes it); -1 for an encrypted network's VXLAN that did not come through the tunnel
 * (counted as plaintext: drop it). */
static __always_inline int delivery(struct vxlan_pkt *pkt, void *data_end, __u8 encrypted, struct flow **f)
{
    struct flow_key key;
    if (flow_key_of(&pkt->inner, data_end, pkt->vni, 0, &key)) {
        count(STAT_MISS_UNPARSED, 1);
        return 0;
    }
    *f = established(&key);
    /* An established flow from the host it was learned to, the way it was learned (tunnel or
     * not), needs no endpoint lookup: the driver drops a flow whose either end goes or moves. */
    if (*f && (*f)->host == pkt->outer->saddr && (*f)->encrypted == encrypted) {
        if (mac_equal(pkt->inner_eth->h_dest, (*f)->local_mac))
            return (*f)->local_ifindex;
        count(STAT_INGRESS_MISS_UNKNOWN_DEST, 1);
        return 0;
    }
    struct ep_key src, dst;
    ep_key_of(&src, pkt->vni, pkt->inner.src);
    ep_key_of(&dst, pkt->vni, pkt->inner.dst);
    struct remote_ep *peer = remote_eps.lookup(&src);
    if (!peer || peer->host != pkt->outer->saddr || (encrypted && !peer->encrypted)) {
        count(STAT_INGRESS_MISS_UNKNOWN_SOURCE, 1);
        return 0;
    }
    if (peer->encrypted && !encrypted) {
        count(STAT_DROP_PLAINTEXT, 1);
        return -1;
    }
    struct local_ep *local = local_eps.lookup(&dst);
    if (!local || !mac_equal(pkt->inner_eth->h_dest, local->mac)) {
        count(STAT_INGRESS_MISS_UNKNOWN_DEST, 1);
        return 0;
    }
    if (!*f) {
        count(STAT_INGRESS_MISS_NOT_ESTABLISHED, 1);
        return 0;
    }
    return local->ifindex;
}

/* The decapsulated packet (its MAC header the inner Ethernet header) into the container. */
static __always_inline int deliver(struct __sk_buff *skb, struct flow *f, __u32 ifindex)
{
    hash_for_receiver(f, skb);
    count(STAT_DECAP_PKTS, 1);
    count(STAT_DECAP_BYTES, skb->len);
    return bpf_redirect_peer(ifindex, 0);
}

#endif
