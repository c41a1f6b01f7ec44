/* Counters: one per-CPU slot per event. datapath.py reads the names from this enum. */
#ifndef XMASQ_STATS_H
#define XMASQ_STATS_H

#include "maps.h"

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
    STAT_DROP_PLAINTEXT, /* VXLAN for an encrypted network's endpoint arriving on the NIC */
    STAT_ERR_ADJUST_ROOM,
    STAT_LB_CONNECT,
    STAT_LB_SENDMSG,
    STAT_LB_NO_BACKEND,
    STAT_LB_REVERSE,
    STAT_MAX,
};

BPF_TABLE_PINNED("percpu_array", __u32, __u64, stats, STAT_MAX, PINNED("stats"));

static __always_inline void count(__u32 what, __u64 n)
{
    __u64 *v = stats.lookup(&what);
    if (v)
        *v += n;
}

#endif
