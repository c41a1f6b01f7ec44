/* Socket load balancing for Swarm service VIPs (cgroup sock_addr hooks on the root cgroup v2).
 *   connect4/6      a connect to a VIP is made to one of its tasks instead (picked at random),
 *                   so the flow is an ordinary container-to-container one: the fast path
 *                   carries it and the VIP costs nothing per packet
 *   sendmsg4/6      the same for each datagram of an unconnected UDP socket (one backend per
 *                   socket while the list stands)
 *   recvmsg4/6      replies from that task are shown as coming from the VIP
 *   getpeername4/6  and so is a connected socket's peer
 * An address that is no VIP of this driver's is left alone: on a machine where several drivers
 * attach (the testbed's hosts share one kernel), each acts only on the VIPs it programmed, and
 * a translated address is no VIP. A VIP with no running task refuses the connect at once.
 */
#include "lib/lb.h"

static __always_inline void addr_of_ctx6(__u8 *a, struct bpf_sock_addr *ctx)
{
    __u32 *w = (__u32 *)a;
    w[0] = ctx->user_ip6[0];
    w[1] = ctx->user_ip6[1];
    w[2] = ctx->user_ip6[2];
    w[3] = ctx->user_ip6[3];
}

static __always_inline void ctx6_of_addr(struct bpf_sock_addr *ctx, const __u8 *a)
{
    const __u32 *w = (const __u32 *)a;
    ctx->user_ip6[0] = w[0];
    ctx->user_ip6[1] = w[1];
    ctx->user_ip6[2] = w[2];
    ctx->user_ip6[3] = w[3];
}

/* Translate the destination held in `addr`; 1 to let the call go on, 0 to refuse it. */
static __always_inline int lb_forward(struct bpf_sock_addr *ctx, __u8 *addr, __u32 hash, __u32 stat)
{
    __u8 vip[ADDR_LEN];
    __builtin_memcpy(vip, addr, ADDR_LEN);
    switch (lb_translate(addr, hash)) {
    case LB_NOT_A_VIP:
        return 1;
    case LB_NO_BACKEND:
        count(STAT_LB_NO_BACKEND, 1);
        bpf_set_retval(-ECONNREFUSED);
        return 0;
    }
    lb_remember(bpf_get_socket_cookie(ctx), addr, (__be16)ctx->user_port, vip);
    count(stat, 1);
    return 2;
}

static __always_inline int forward4(struct bpf_sock_addr *ctx, __u32 hash, __u32 stat)
{
    __u8 addr[ADDR_LEN] __attribute__((aligned(4)));
    addr_of_ipv4(addr, ctx->user_ip4);
    int r = lb_forward(ctx, addr, hash, stat);
    if (r == 2)
        ctx->user_ip4 = ((__u32 *)addr)[3];
    return !!r;
}

static __always_inline int forward6(struct bpf_sock_addr *ctx, __u32 hash, __u32 stat)
{
    __u8 addr[ADDR_LEN] __attribute__((aligned(4)));
    addr_of_ctx6(addr, ctx);
    int r = lb_forward(ctx, addr, hash, stat);
    if (r == 2)
        ctx6_of_addr(ctx, addr);
    return !!r;
}

static __always_inline int reverse4(struct bpf_sock_addr *ctx)
{
    __u8 addr[ADDR_LEN] __attribute__((aligned(4)));
    addr_of_ipv4(addr, ctx->user_ip4);
    if (lb_reverse(bpf_get_socket_cookie(ctx), addr, (__be16)ctx->user_port))
        ctx->user_ip4 = ((__u32 *)addr)[3];
    return 1;
}

static __always_inline int reverse6(struct bpf_sock_addr *ctx)
{
    __u8 addr[ADDR_LEN] __attribute__((aligned(4)));
    addr_of_ctx6(addr, ctx);
    if (lb_reverse(bpf_get_socket_cookie(ctx), addr, (__be16)ctx->user_port))
        ctx6_of_addr(ctx, addr);
    return 1;
}

int sock_connect4(struct bpf_sock_addr *ctx)
{
    return forward4(ctx, bpf_get_prandom_u32(), STAT_LB_CONNECT);
}

int sock_connect6(struct bpf_sock_addr *ctx)
{
    return forward6(ctx, bpf_get_prandom_u32(), STAT_LB_CONNECT);
}

int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
    return forward4(ctx, lb_socket_hash(bpf_get_socket_cookie(ctx)), STAT_LB_SENDMSG);
}

int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
    return forward6(ctx, lb_socket_hash(bpf_get_socket_cookie(ctx)), STAT_LB_SENDMSG);
}

int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
    return reverse4(ctx);
}

int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
    return reverse6(ctx);
}

int sock_getpeername4(struct bpf_sock_addr *ctx)
{
    return reverse4(ctx);
}

int sock_getpeername6(struct bpf_sock_addr *ctx)
{
    return reverse6(ctx);
}
