/* Hooks on the underlay NIC.
 *   to_nic    tc egress: learns from what the kernel's vxlan device sent (the outer header
 *             template per remote host and VNI, the flow's UDP source port) and marks the
 *             flow as carried out by the slow path. Skips the fast path's own packets.
 *   from_nic  tc ingress: VXLAN from a known host, for a known VNI, from a remote endpoint of
 *             that VNI on that very host, to a local endpoint of that VNI, on an established
 *             flow: decapsulate and hand it straight to the container (bpf_redirect_peer).
 *             VXLAN for an encrypted network's endpoint is plaintext where only the tunnel may
 *             carry it: dropped and counted.
 * Any miss returns TC_ACT_OK: the vxlan device (slow path) handles the packet.
 */
#include "lib/hostpath.h"

int to_nic(struct __sk_buff *skb)
{
    if (skb->mark == FASTPATH_MARK)
        return TC_ACT_OK;
    void *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    struct tunnel t = {.ifindex = skb->ifindex};
    if (parse_vxlan_pkt((void *)(long)skb->data, data_end, &pkt) || bpf_skb_load_bytes(skb, 0, t.hdr, OUTER_LEN))
        return TC_ACT_OK;
    return learn_out(&pkt, data_end, &t);
}

int from_nic(struct __sk_buff *skb)
{
    void *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    struct flow *f;
    if (parse_vxlan_pkt((void *)(long)skb->data, data_end, &pkt))
        return TC_ACT_OK; /* not VXLAN: none of our business */
    int ifindex = delivery(&pkt, data_end, 0, &f);
    if (ifindex <= 0)
        return ifindex ? TC_ACT_SHOT : TC_ACT_OK;
    int err = pop_outer(skb, pkt.inner_eth);
    if (err) {
        count(STAT_ERR_ADJUST_ROOM, 1);
        return err == ENCAP_UNCHANGED ? TC_ACT_OK : TC_ACT_SHOT;
    }
    return deliver(skb, f, ifindex);
}
