/* Shared by every XMasq program: constants, map layouts, stats.
 * Per-host values come from the compiler command line (see xmasq_driver/datapath.py):
 *   PIN_DIR      bpffs directory of this host's pinned maps
 *   VXLAN_PORT   UDP port of the overlay
 *   FASTPATH_MARK  skb->mark that tags packets the fast path encapsulated
 *   *_MAX        map sizes
 */
#ifndef XMASQ_COMMON_H
#define XMASQ_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/udp.h>

#define OUTER_LEN 50 /* Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 */
#define VXLAN_FLAG_VNI 0x08000000

/* Keys that name a container always carry the VNI: two networks may share a subnet. */
struct ep_key {
    __u32 vni;
    __be32 ip;
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
};

/* A container on another host (written from etcd, never learned). */
struct remote_ep {
    __be32 host;
};

struct tunnel_key {
    __be32 host;
    __u32 vni;
};

/* Outer headers the kernel's vxlan device last sent to (host, vni), and the NIC it used. */
struct tunnel {
    __u8 hdr[OUTER_LEN];
    __u8 pad[2];
    __u32 ifindex;
};

/* A flow seen from the local container's side. Ports are 0 for ICMP and other protocols. */
struct flow_key {
    __u32 vni;
    __be32 local;
    __be32 remote;
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
};

/* Counters; datapath.py reads the names from this enum. */
enum xmasq_stat {
    STAT_ENCAP_PKTS,
    STAT_ENCAP_BYTES,
    STAT_DECAP_PKTS,
    STAT_DECAP_BYTES,
    STAT_LOCAL_PKTS,
    STAT_LOCAL_BYTES,
    STAT_MISS_NO_PEER,
    STAT_MISS_NO_TUNNEL,
    STAT_MISS_NOT_ESTABLISHED,
    STAT_LOCAL_MISS_NOT_ESTABLISHED,
    STAT_MISS_UNPARSED,
    STAT_INGRESS_MISS_UNKNOWN_SOURCE,
    STAT_INGRESS_MISS_UNKNOWN_DEST,
    STAT_INGRESS_MISS_NOT_ESTABLISHED,
    STAT_LEARN_TUNNEL,
    STAT_LEARN_OUT,
    STAT_LEARN_IN,
    STAT_DROP_SPOOFED,
    STAT_ERR_ADJUST_ROOM,
    STAT_MAX,
};

#define PINNED(path) PIN_DIR "/" path
BPF_TABLE_PINNED("hash", struct ep_key, struct local_ep, local_eps, LOCAL_MAX, PINNED("local_eps"));
BPF_TABLE_PINNED("hash", __u32, struct lxc_info, lxc_by_ifindex, LOCAL_MAX, PINNED("lxc_by_ifindex"));
BPF_TABLE_PINNED("hash", struct ep_key, struct remote_ep, remote_eps, REMOTE_MAX, PINNED("remote_eps"));
BPF_TABLE_PINNED("hash", struct tunnel_key, struct tunnel, tunnels, TUNNEL_MAX, PINNED("tunnels"));
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow, flows, FLOW_MAX, PINNED("flows"));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, stats, STAT_MAX, PINNED("stats"));

static __always_inline void count(__u32 what, __u64 n)
{
    __u64 *v = stats.lookup(&what);
    if (v)
        *v += n;
}

/* memcmp would become a call to bcmp, which BPF cannot make. */
static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* The same flow seen from its other end (both ends local: same-host traffic). */
static __always_inline void reverse(struct flow_key *key, struct flow_key *back)
{
    *back = *key;
    back->local = key->remote;
    back->remote = key->local;
    back->lport = key->rport;
    back->rport = key->lport;
}

/* The flow, if the slow path carried it both ways; else NULL. */
static __always_inline struct flow *established(struct flow_key *key)
{
    struct flow *f = flows.lookup(key);
    return f && f->seen_out && f->seen_in ? f : NULL;
}

/* Flow steering (RFS) puts a packet on the CPU recorded for its hash, and a socket records its
 * CPU under the hash of what it receives. Packets a container sends carry its socket's txhash;
 * giving what it receives on the flow that same hash makes RFS steer the container's packets
 * to the CPU its socket runs on: where they were sent, and in order when that CPU changes.
 * While that hash is unknown (it has sent nothing on the flow yet) what it receives carries
 * none, so that it never records its own CPU for its peer's packets. */
static __always_inline void remember_hash(struct flow *f, struct __sk_buff *skb)
{
    if (f->hash != skb->hash)
        f->hash = skb->hash;
}

static __always_inline void hash_for_receiver(struct flow *f, struct __sk_buff *skb)
{
    if (f && f->hash)
        bpf_set_hash(skb, f->hash);
    else
        bpf_set_hash_invalid(skb);
}

#endif
