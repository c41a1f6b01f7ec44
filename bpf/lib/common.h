/* Shared by every XMasq program: includes, the layouts of what the maps hold, small helpers.
 * Per-host values come from the compiler command line (xmasq_driver/dataplane/datapath.py, each with
 * one owner in the driver):
 *   PIN_DIR        bpffs directory of this host's pinned maps
 *   VXLAN_PORT     UDP port of the overlay
 *   ENCRYPTED_VXLAN_PORT  UDP port of encrypted networks' VXLAN (inside WireGuard)
 *   OUTER_LEN      bytes of outer headers: Ethernet + IPv4 + UDP + VXLAN (VXLAN_OVERHEAD)
 *   FASTPATH_MARK  skb->mark that tags packets the fast path encapsulated
 *   LB_SLOTS       backend slots of one service in each half of lb_backends
 *   *_MAX          map sizes
 */
#ifndef XMASQ_COMMON_H
#define XMASQ_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/udp.h>

/* An inner (container) address of either version, in one form: IPv6, or IPv4 mapped
 * (::ffff:a.b.c.d), so that one key type and one code path serve both. */
#define ADDR_LEN 16

/* Keys that name a container always carry the VNI: two networks may share a subnet. */
struct ep_key {
    __u32 vni;
    __u8 ip[ADDR_LEN];
};

/* A container on this host, by (vni, ip): where to deliver. */
struct local_ep {
    __u32 ifindex; /* host end of its veth */
    __u8 mac[6];
    __u8 pad[2];
};

/* The same container, by the ifindex of its host veth: who is sending. */
struct lxc_info {
    __u32 vni;
    __be32 ip;
    __u8 mac[6];
    __u8 fast; /* 0: anti-spoofing only (fast path off for its network or globally) */
    __u8 pad;
    __u8 ip6[ADDR_LEN]; /* its IPv6 address on the network, all zero if it has none */
};

/* A container on another host (written from etcd, never learned). */
struct remote_ep {
    __be32 host;
    __u8 encrypted; /* its network is encrypted: its VXLAN goes only through the WireGuard device */
    __u8 pad[3];
};

struct tunnel_key {
    __be32 host;
    __u32 vni;
};

/* Outer headers the kernel's vxlan device last sent to (host, vni), and the device it used: the
 * NIC, or for an encrypted network the WireGuard device (an L3 device: hdr's Ethernet header is
 * a placeholder, which bpf_redirect to it strips). */
struct tunnel {
    __u8 hdr[OUTER_LEN];
    __u8 encrypted; /* learned on the WireGuard device */
    __u8 pad[(4 - (OUTER_LEN + 1) % 4) % 4];
    __u32 ifindex;
};

/* A flow seen from the local container's side. Ports are 0 for ICMP and other protocols. */
struct flow_key {
    __u32 vni;
    __u8 local[ADDR_LEN];
    __u8 remote[ADDR_LEN];
    __be16 lport;
    __be16 rport;
    __u8 proto;
    __u8 pad[3];
};

struct flow {
    __u8 seen_out; /* the slow path carried it out of this host (past the firewall) */
    __u8 seen_in;  /* the slow path delivered it to the local container */
    __be16 sport; /* outer UDP source port the kernel's vxlan chose for it */
    __u32 hash;   /* skb->hash of what the local container sends on it (its socket's txhash) */
    /* Where the slow path carried it out to, learned with seen_out, so that an established flow's
     * packets need no endpoint lookup: the remote end's host (and whether its network is
     * encrypted), or for a remote end on this host, its host veth. The driver drops a flow when
     * either end goes or moves (datapath.py), so these are as current as the endpoint tables. */
    __be32 host;
    __u32 ifindex;
    /* The local end's host veth and MAC, learned with seen_in: where from_nic and from_tun deliver
     * the flow's packets without looking up the endpoint table (dropped with the endpoint too). */
    __u32 local_ifindex;
    __u8 local_mac[6];
    __u8 encrypted; /* with host: the remote end's network is encrypted (its VXLAN only in the tunnel) */
    __u8 pad2;
};

/* A Swarm service's virtual IP (socket load balancing, bpf_sock.c), keyed by the VIP itself:
 * the driver programs a VIP only while it is unique among this host's networks. */
struct lb_vip_key {
    __u8 addr[ADDR_LEN];
};

/* Its backends are slots base .. base + count - 1 of lb_backends under its id; the driver
 * writes a new list in the other half (base 0 or LB_SLOTS) and then flips base and count in
 * this one value, so a connect never sees half a list. */
struct lb_service {
    __u32 id;
    __u16 count;
    __u16 base;
};

struct lb_backend_key {
    __u32 id;
    __u32 slot;
};

struct lb_backend {
    __u8 addr[ADDR_LEN]; /* a task's own address on the network */
};

/* What a socket was translated to, so that getpeername and recvmsg show it the VIP. */
struct lb_revnat_key {
    __u64 cookie; /* the socket's */
    __u8 addr[ADDR_LEN];
    __be16 port;
    __u8 pad[6];
};

struct lb_revnat {
    __u8 vip[ADDR_LEN];
};

/* memcmp would become a call to bcmp, which BPF cannot make. */
static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* Addresses in ADDR_LEN form are compared as words: every one sits 4-byte aligned (in the keys,
 * in lxc_info and in struct l3, never straight in a packet). */
static __always_inline int addr_is_zero(const __u8 *a)
{
    const __u32 *w = (const __u32 *)a;
    return !(w[0] | w[1] | w[2] | w[3]);
}

static __always_inline int addr_equal(const __u8 *a, const __u8 *b)
{
    const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
    return !((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]));
}

/* An IPv4 address in the ADDR_LEN form (::ffff:a.b.c.d). */
static __always_inline void addr_of_ipv4(__u8 *a, __be32 ip)
{
    __u32 *w = (__u32 *)a;
    w[0] = w[1] = 0;
    w[2] = bpf_htonl(0xffff);
    w[3] = ip;
}

static __always_inline void ep_key_of(struct ep_key *key, __u32 vni, const __u8 *ip)
{
    key->vni = vni;
    __builtin_memcpy(key->ip, ip, ADDR_LEN);
}

/* The container's IPv6 network address, if it has one. */
static __always_inline int addr_is_my_ip6(const __u8 *a, struct lxc_info *me)
{
    return !addr_is_zero(me->ip6) && addr_equal(a, me->ip6);
}

/* One of the container's own network addresses (its link-local is never in the maps). */
static __always_inline int addr_is_mine(const __u8 *a, struct lxc_info *me)
{
    const __u32 *w = (const __u32 *)a;
    if (!(w[0] | w[1]) && w[2] == bpf_htonl(0xffff))
        return w[3] == me->ip;
    return addr_is_my_ip6(a, me);
}

#endif
