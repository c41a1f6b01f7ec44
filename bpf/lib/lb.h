/* Socket load balancing of Swarm service VIPs: which backend a socket gets, and what it was
 * translated from. Used by bpf_sock.c only. */
#ifndef XMASQ_LB_H
#define XMASQ_LB_H

#include "stats.h"

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

enum lb_result {
    LB_NOT_A_VIP, /* not ours: leave it alone (another driver's program may know it) */
    LB_NO_BACKEND,
    LB_TRANSLATED,
};

/* The backend for `addr` (in place), picked by `hash` among the VIP's live ones. */
static __always_inline int lb_translate(__u8 *addr, __u32 hash)
{
    struct lb_service *svc = lb_vips.lookup((struct lb_vip_key *)addr);
    if (!svc)
        return LB_NOT_A_VIP;
    __u32 count = svc->count;
    if (!count)
        return LB_NO_BACKEND;
    struct lb_backend_key k = {.id = svc->id, .slot = svc->base + hash % count};
    struct lb_backend *be = lb_backends.lookup(&k);
    if (!be)
        return LB_NO_BACKEND;
    __builtin_memcpy(addr, be->addr, ADDR_LEN);
    return LB_TRANSLATED;
}

/* A socket keeps the backend it was given, but is shown the VIP (getpeername, recvmsg). */
static __always_inline void lb_remember(__u64 cookie, const __u8 *backend, __be16 port, const __u8 *vip)
{
    struct lb_revnat_key k = {.cookie = cookie, .port = port};
    struct lb_revnat v = {};
    __builtin_memcpy(k.addr, backend, ADDR_LEN);
    __builtin_memcpy(v.vip, vip, ADDR_LEN);
    lb_revnat.update(&k, &v);
}

/* The VIP a socket's peer `addr`:`port` stands for (in place); 0 if it was not translated. */
static __always_inline int lb_reverse(__u64 cookie, __u8 *addr, __be16 port)
{
    struct lb_revnat_key k = {.cookie = cookie, .port = port};
    __builtin_memcpy(k.addr, addr, ADDR_LEN);
    struct lb_revnat *v = lb_revnat.lookup(&k);
    if (!v)
        return 0;
    __builtin_memcpy(addr, v->vip, ADDR_LEN);
    count(STAT_LB_REVERSE, 1);
    return 1;
}

/* A socket's datagrams all go to one backend while the list stands: the cookie, mixed. */
static __always_inline __u32 lb_socket_hash(__u64 cookie)
{
    return (__u32)((cookie * 0x9E3779B97F4A7C15ULL) >> 32);
}

#endif
