/* Flow state: whether the slow path carried a flow both ways, and its hash for steering. */
#ifndef XMASQ_FLOW_H
#define XMASQ_FLOW_H

#include "maps.h"

/* The same flow seen from its other end (both ends local: same-host traffic). */
static __always_inline void reverse(struct flow_key *key, struct flow_key *back)
{
    *back = *key;
    __builtin_memcpy(back->local, key->remote, ADDR_LEN);
    __builtin_memcpy(back->remote, key->local, ADDR_LEN);
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
