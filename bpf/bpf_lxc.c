/* Hooks on the host end of each container's veth.
 *   from_container  tc ingress (packets the container sends): anti-spoofing (always, also
 *                   where the fast path is off), then the fast path: same-host redirect or
 *                   encapsulation straight to the NIC.
 *   to_container    tc egress (packets the slow path delivers): marks the flow as
 *                   carried in by the slow path, past the host's firewall.
 * Any miss returns TC_ACT_OK and the bridge (slow path) handles the packet.
 */
#include "lib/encap.h"
#include "lib/flow.h"
#include "lib/ipv6.h"
#include "lib/stats.h"

/* ARP for IPv4 over Ethernet; the addresses are unaligned, hence bytes. */
struct arp_eth {
    __be16 htype, ptype;
    __u8 hlen, plen;
    __be16 op;
    __u8 sha[6], spa[4], tha[6], tpa[4];
} __attribute__((packed));

/* An established flow whose other end is on this host: straight into that container. */
static __always_inline int same_host(struct __sk_buff *skb, struct flow *f, struct flow_key *key)
{
    remember_hash(f, skb);
    struct flow_key back;
    reverse(key, &back);
    hash_for_receiver(flows.lookup(&back), skb);
    count(STAT_LOCAL_PKTS, 1);
    count(STAT_LOCAL_BYTES, skb->len);
    return bpf_redirect_peer(f->ifindex, 0);
}

/* An established flow whose other end is on another host: the outer headers learned for that
 * host and network in front, straight to the device that carries them. */
static __always_inline int encap(struct __sk_buff *skb, struct lxc_info *me, struct flow *f)
{
    remember_hash(f, skb);
    struct tunnel_key tk = {.host = f->host, .vni = me->vni};
    struct tunnel *t = tunnels.lookup(&tk);
    if (!t || t->encrypted != f->encrypted) { /* an encrypted network's only through the tunnel */
        count(STAT_MISS_NO_TUNNEL, 1);
        return TC_ACT_OK;
    }
    __u32 len = skb->len;
    int err = push_outer(skb, t, f->sport);
    if (err) {
        count(STAT_ERR_ADJUST_ROOM, 1);
        return err == ENCAP_UNCHANGED ? TC_ACT_OK : TC_ACT_SHOT; /* never send half-built headers */
    }
    skb->mark = FASTPATH_MARK; /* so the NIC's learn hook skips it */
    count(STAT_ENCAP_PKTS, 1);
    count(STAT_ENCAP_BYTES, len);
    return bpf_redirect(t->ifindex, 0);
}

/* A flow the slow path has not carried both ways yet, counted by where its other end is (the
 * endpoint tables are looked up only here, off the fast path). */
static __always_inline int not_established(struct flow_key *key)
{
    struct ep_key dst = {.vni = key->vni};
    __builtin_memcpy(dst.ip, key->remote, ADDR_LEN);
    if (local_eps.lookup(&dst))
        count(STAT_LOCAL_MISS_NOT_ESTABLISHED, 1);
    else if (remote_eps.lookup(&dst))
        count(STAT_MISS_NOT_ESTABLISHED, 1);
    else
        count(STAT_MISS_NO_PEER, 1);
    return TC_ACT_OK;
}

/* A container sends only as itself: its own MAC on every frame, its own address on every
 * IPv4 packet and ARP message (0.0.0.0 allowed for ARP probes), on every IPv6 packet (its
 * link-local or network address; :: allowed for duplicate address detection) and NDP message
 * (lib/ipv6.h). VLAN tags would hide the inner headers from these checks, so tagged frames
 * count as spoofed too. */
static __always_inline int spoofed(struct __sk_buff *skb, struct ethhdr *eth, void *data_end, struct lxc_info *me)
{
    if (skb->vlan_present || !mac_equal(eth->h_source, me->mac))
        return 1;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        return (void *)(ip + 1) > data_end || ip->saddr != me->ip;
    }
    if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
        struct arp_eth *arp = (void *)(eth + 1);
        if ((void *)(arp + 1) > data_end)
            return 1;
        __be32 spa;
        __builtin_memcpy(&spa, arp->spa, 4);
        return !mac_equal(arp->sha, me->mac) || (spa != me->ip && spa != 0);
    }
    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > data_end)
            return 1;
        return !ip6_is_own(ip6->saddr.in6_u.u6_addr8, me, 1) || ndp_spoofed(ip6, data_end, me);
    }
    return eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD);
}

int from_container(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    __u32 ifindex = skb->ifindex;
    struct lxc_info *me = lxc_by_ifindex.lookup(&ifindex);
    struct ethhdr *eth = data;
    if (!me)
        return TC_ACT_OK;
    if ((void *)(eth + 1) > data_end || spoofed(skb, eth, data_end, me)) {
        count(STAT_DROP_SPOOFED, 1);
        return TC_ACT_SHOT;
    }
    if (!me->fast)
        return TC_ACT_OK;
    struct l3 l3;
    struct flow_key key;
    if (parse_l3(eth, data_end, &l3) || flow_key_of(&l3, data_end, me->vni, 1, &key)) {
        count(STAT_MISS_UNPARSED, 1);
        return TC_ACT_OK;
    }
    struct flow *f = established(&key);
    if (!f)
        return not_established(&key);
    if (f->host)
        return encap(skb, me, f);
    if (f->ifindex)
        return same_host(skb, f, &key);
    return not_established(&key);
}

int to_container(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    __u32 ifindex = skb->ifindex;
    struct lxc_info *me = lxc_by_ifindex.lookup(&ifindex);
    struct l3 l3;
    struct flow_key key;
    if (!me || !me->fast || parse_l3(data, data_end, &l3) || !addr_is_mine(l3.dst, me) ||
        flow_key_of(&l3, data_end, me->vni, 0, &key))
        return TC_ACT_OK;
    struct ep_key src;
    ep_key_of(&src, me->vni, l3.src);
    int from_remote = remote_eps.lookup(&src) != NULL;
    if (!from_remote && !local_eps.lookup(&src))
        return TC_ACT_OK; /* from the gateway or outside: never accelerated */
    struct flow zero = {};
    struct flow *f = flows.lookup_or_try_init(&key, &zero);
    if (f && !f->seen_in) {
        f->local_ifindex = skb->ifindex;
        __builtin_memcpy(f->local_mac, me->mac, 6);
        f->seen_in = 1;
        count(STAT_LEARN_IN, 1);
    }
    hash_for_receiver(f, skb);
    if (!from_remote) {
        /* Same host: delivered here means it also left its sender past the firewall. */
        struct flow_key back;
        reverse(&key, &back);
        struct flow *b = flows.lookup_or_try_init(&back, &zero);
        if (b && !b->seen_out) {
            b->ifindex = skb->ifindex; /* the receiver's host veth: where its sender redirects to */
            b->host = 0;
            b->seen_out = 1;
            count(STAT_LEARN_OUT, 1);
        }
    }
    return TC_ACT_OK;
}
