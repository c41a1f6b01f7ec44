/* Hooks on the underlay NIC.
 *   to_nic    tc egress: learns from what the kernel's vxlan device sent (the outer header
 *             template per remote host and VNI, the flow's UDP source port) and marks the
 *             flow as carried out by the slow path. Skips the fast path's own packets.
 *   from_nic  tc ingress: VXLAN from a known host, for a known VNI, from a remote endpoint of
 *             that VNI on that very host, to a local endpoint of that VNI, on an established
 *             flow: decapsulate and hand it straight to the container (bpf_redirect_peer).
 * Any miss returns TC_ACT_OK: the vxlan device (slow path) handles the packet.
 */
#include "lib/encap.h"
#include "lib/flow.h"
#include "lib/stats.h"

int to_nic(struct __sk_buff *skb)
{
    if (skb->mark == FASTPATH_MARK)
        return TC_ACT_OK;
    void *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    struct flow_key key;
    if (parse_vxlan_pkt((void *)(long)skb->data, data_end, &pkt) ||
        flow_key_of(&pkt.inner, data_end, pkt.vni, 1, &key))
        return TC_ACT_OK;
    struct iphdr *outer = pkt.outer;
    __u32 vni = pkt.vni;
    struct ep_key src, dst;
    ep_key_of(&src, pkt.vni, pkt.inner.src);
    ep_key_of(&dst, pkt.vni, pkt.inner.dst);
    struct remote_ep *peer = remote_eps.lookup(&dst);
    if (!local_eps.lookup(&src) || !peer || peer->host != outer->daddr)
        return TC_ACT_OK;
    /* Overwrite, never insert-only: next-hop MAC, TTL or NIC may change. */
    struct tunnel_key tk = {.host = outer->daddr, .vni = vni};
    struct tunnel t = {.ifindex = skb->ifindex};
    if (bpf_skb_load_bytes(skb, 0, t.hdr, OUTER_LEN))
        return TC_ACT_OK;
    tunnels.update(&tk, &t);
    count(STAT_LEARN_TUNNEL, 1);
    struct flow zero = {};
    struct flow *f = flows.lookup_or_try_init(&key, &zero);
    if (f) {
        if (!f->seen_out)
            count(STAT_LEARN_OUT, 1);
        f->seen_out = 1;
        f->sport = pkt.udp->source;
    }
    return TC_ACT_OK;
}

int from_nic(struct __sk_buff *skb)
{
    void *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    struct flow_key key;
    if (parse_vxlan_pkt((void *)(long)skb->data, data_end, &pkt))
        return TC_ACT_OK; /* not VXLAN: none of our business */
    if (flow_key_of(&pkt.inner, data_end, pkt.vni, 0, &key)) {
        count(STAT_MISS_UNPARSED, 1);
        return TC_ACT_OK;
    }
    struct iphdr *outer = pkt.outer;
    struct ethhdr *inner_eth = pkt.inner_eth;
    struct ep_key src, dst;
    ep_key_of(&src, pkt.vni, pkt.inner.src);
    ep_key_of(&dst, pkt.vni, pkt.inner.dst);
    struct remote_ep *peer = remote_eps.lookup(&src);
    if (!peer || peer->host != outer->saddr) {
        count(STAT_INGRESS_MISS_UNKNOWN_SOURCE, 1);
        return TC_ACT_OK;
    }
    struct local_ep *local = local_eps.lookup(&dst);
    if (!local || !mac_equal(inner_eth->h_dest, local->mac)) {
        count(STAT_INGRESS_MISS_UNKNOWN_DEST, 1);
        return TC_ACT_OK;
    }
    struct flow *f = established(&key);
    if (!f) {
        count(STAT_INGRESS_MISS_NOT_ESTABLISHED, 1);
        return TC_ACT_OK;
    }
    __u32 ifindex = local->ifindex;
    int err = pop_outer(skb, inner_eth);
    if (err) {
        count(STAT_ERR_ADJUST_ROOM, 1);
        return err == ENCAP_UNCHANGED ? TC_ACT_OK : TC_ACT_SHOT;
    }
    hash_for_receiver(f, skb);
    count(STAT_DECAP_PKTS, 1);
    count(STAT_DECAP_BYTES, skb->len);
    return bpf_redirect_peer(ifindex, 0);
}
