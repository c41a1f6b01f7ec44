/* Hooks on the WireGuard device (encrypted networks; xmasq_driver/dataplane/tunnel.py). The
 * device is L3: its packets start at the outer IPv4 header, with no Ethernet header.
 *   to_tun    tc egress: learns from what the kernel's vxlan device sent into the tunnel, as
 *             to_nic does on the NIC. The learned headers get a placeholder Ethernet header in
 *             front, which bpf_redirect to this device strips again, so from_container's
 *             encapsulation is the same for both. Skips the fast path's own packets.
 *   from_tun  tc ingress: what WireGuard decrypted (so authenticated: from that peer), VXLAN
 *             from a remote endpoint of an encrypted network on that very host, to a local one,
 *             on an established flow: the outer headers come off, the inner Ethernet header
 *             becomes the packet's MAC header (an L3 packet needs one pushed to enter a veth),
 *             and it goes straight to the container. IPv6 inside is left to the slow path (its
 *             skb->protocol would have to change as well).
 * Any miss returns TC_ACT_OK: the kernel's vxlan device (slow path) handles the packet.
 */
#include "lib/hostpath.h"

int to_tun(struct __sk_buff *skb)
{
    if (skb->mark == FASTPATH_MARK)
        return TC_ACT_OK;
    void *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    struct tunnel t = {.encrypted = 1, .ifindex = skb->ifindex};
    ((struct ethhdr *)t.hdr)->h_proto = bpf_htons(ETH_P_IP);
    if (parse_encrypted_vxlan_pkt((void *)(long)skb->data, data_end, &pkt) ||
        bpf_skb_load_bytes(skb, 0, t.hdr + ETH_HLEN, OUTER_LEN - ETH_HLEN))
        return TC_ACT_OK;
    return learn_out(&pkt, data_end, &t);
}

int from_tun(struct __sk_buff *skb)
{
    void *data_end = (void *)(long)skb->data_end;
    struct vxlan_pkt pkt;
    struct flow *f;
    if (parse_encrypted_vxlan_pkt((void *)(long)skb->data, data_end, &pkt))
        return TC_ACT_OK;
    if (pkt.inner_eth->h_proto != bpf_htons(ETH_P_IP)) {
        count(STAT_MISS_UNPARSED, 1);
        return TC_ACT_OK;
    }
    int ifindex = delivery(&pkt, data_end, 1, &f);
    if (ifindex <= 0)
        return TC_ACT_OK;
    __u8 eth[ETH_HLEN];
    __builtin_memcpy(eth, pkt.inner_eth, ETH_HLEN);
    /* Outer IPv4, UDP, VXLAN and the inner Ethernet header off (at offset 0: an L3 device's MAC
     * header is empty); then room for a MAC header, which becomes the inner Ethernet header. */
    __s32 strip = (OUTER_LEN - ETH_HLEN) + ETH_HLEN;
    if (bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO)) {
        count(STAT_ERR_ADJUST_ROOM, 1);
        return TC_ACT_OK;
    }
    if (bpf_skb_change_head(skb, ETH_HLEN, 0) || bpf_skb_store_bytes(skb, 0, eth, ETH_HLEN, 0)) {
        count(STAT_ERR_ADJUST_ROOM, 1);
        return TC_ACT_SHOT; /* half changed: never delivered */
    }
    return deliver(skb, f, ifindex);
}
