/* IPv6 for the anti-spoofing guard: which IPv6 addresses are a container's own, and which
 * Neighbour Discovery messages it may send (NDP is IPv6's ARP: an answer for another's address
 * or with another's MAC would take its traffic, a Router Advertisement all of the network's). */
#ifndef XMASQ_IPV6_H
#define XMASQ_IPV6_H

#include <uapi/linux/icmpv6.h>
#include <uapi/linux/ipv6.h>

#include "common.h"

#define NDISC_ROUTER_ADVERT 134
#define NDISC_NEIGHBOUR_SOLICIT 135
#define NDISC_NEIGHBOUR_ADVERT 136
#define NDISC_REDIRECT 137
#define ND_OPT_SOURCE_LL_ADDR 1
#define ND_OPT_TARGET_LL_ADDR 2
#define IPV6_EXT_MAX 4 /* hop-by-hop, destination options, routing, destination options */
#define ND_OPTS_MAX 4 /* an honest NS or NA carries one (a link-layer address), two with a nonce */

/* fe80::/64 with the modified EUI-64 of its MAC: the link-local address the kernel gives the
 * container's interface (addr_gen_mode 0, which Docker leaves as it is). */
static __always_inline int is_link_local_of(const __u8 *a, const __u8 *mac)
{
    return a[0] == 0xfe && a[1] == 0x80 && !(a[2] | a[3] | a[4] | a[5] | a[6] | a[7]) && a[8] == (mac[0] ^ 0x02) &&
           a[9] == mac[1] && a[10] == mac[2] && a[11] == 0xff && a[12] == 0xfe && a[13] == mac[3] &&
           a[14] == mac[4] && a[15] == mac[5];
}

/* Whether the address at `in_packet` (unaligned) is the container's link-local or network address;
 * `unspecified_ok`: "::" too (the source of duplicate address detection). */
static __always_inline int ip6_is_own(const __u8 *in_packet, struct lxc_info *me, int unspecified_ok)
{
    __u32 a[4];
    __builtin_memcpy(a, in_packet, ADDR_LEN);
    if (addr_is_zero((__u8 *)a))
        return unspecified_ok;
    return is_link_local_of((__u8 *)a, me->mac) || addr_is_my_ip6((__u8 *)a, me);
}

/* Past the extension headers an NDP message may follow (the receiver's stack walks them too; MLD
 * comes behind hop-by-hop): the upper-layer header, its protocol in *proto, the payload bytes
 * from it in *left. NULL if cut short or deeper than IPV6_EXT_MAX: what cannot be read here
 * could be NDP, so it counts as forged. */
static __always_inline __u8 *ipv6_upper(struct ipv6hdr *ip6, void *data_end, __u8 *proto, int *left)
{
    __u8 *at = (void *)(ip6 + 1);
    __u8 next = ip6->nexthdr;
    *left = bpf_ntohs(ip6->payload_len);
#pragma unroll
    for (int i = 0; i < IPV6_EXT_MAX; i++) {
        if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
            break;
        if ((void *)(at + 2) > data_end)
            return NULL;
        int len = (at[1] + 1) * 8;
        next = at[0];
        at += len;
        *left -= len;
    }
    if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS)
        return NULL;
    *proto = next;
    return at;
}

/* NS and NA may name only its own MAC in their link-layer address options, an NA only its own
 * address as the target; a container is no router, so RAs and redirects are refused outright.
 * Options are walked within the IPv6 payload (not the frame: Ethernet may pad it). */
static __always_inline int ndp_spoofed(struct ipv6hdr *ip6, void *data_end, struct lxc_info *me)
{
    __u8 proto = 0;
    int left = 0;
    __u8 *icmp = ipv6_upper(ip6, data_end, &proto, &left);
    if (!icmp)
        return 1;
    if (proto != IPPROTO_ICMPV6)
        return 0;
    if ((void *)(icmp + sizeof(struct icmp6hdr)) > data_end)
        return 1;
    __u8 type = icmp[0];
    if (type == NDISC_ROUTER_ADVERT || type == NDISC_REDIRECT)
        return 1;
    if (type != NDISC_NEIGHBOUR_SOLICIT && type != NDISC_NEIGHBOUR_ADVERT)
        return 0;
    __u8 *target = icmp + sizeof(struct icmp6hdr);
    if ((void *)(target + 16) > data_end)
        return 1;
    if (type == NDISC_NEIGHBOUR_ADVERT && !ip6_is_own(target, me, 0))
        return 1;
    __u8 *opt = target + 16;
    left -= sizeof(struct icmp6hdr) + 16;
#pragma unroll
    for (int i = 0; i < ND_OPTS_MAX; i++) {
        if (left < 2)
            return left != 0; /* options end exactly where the payload does */
        if ((void *)(opt + 2) > data_end)
            return 1;
        int len = opt[1] * 8;
        if (len == 0 || len > left)
            return 1;
        if (opt[0] == ND_OPT_SOURCE_LL_ADDR || opt[0] == ND_OPT_TARGET_LL_ADDR) {
            if ((void *)(opt + 8) > data_end || !mac_equal(opt + 2, me->mac))
                return 1;
        }
        opt += len;
        left -= len;
    }
    return left != 0; /* more options than an honest message carries */
}

#endif
