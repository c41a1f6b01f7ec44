/* The pinned maps (their layouts: common.h). The driver writes the endpoints and the service
 * VIPs and reads the rest; learning (bpf_nic.c, bpf_lxc.c) fills tunnels and flows, the socket
 * load balancer (bpf_sock.c) lb_revnat. */
#ifndef XMASQ_MAPS_H
#define XMASQ_MAPS_H

#include "common.h"

#define PINNED(path) PIN_DIR "/" path
BPF_TABLE_PINNED("hash", struct ep_key, struct local_ep, local_eps, LOCAL_MAX, PINNED("local_eps"));
BPF_TABLE_PINNED("hash", __u32, struct lxc_info, lxc_by_ifindex, LOCAL_MAX, PINNED("lxc_by_ifindex"));
BPF_TABLE_PINNED("hash", struct ep_key, struct remote_ep, remote_eps, REMOTE_MAX, PINNED("remote_eps"));
BPF_TABLE_PINNED("hash", struct tunnel_key, struct tunnel, tunnels, TUNNEL_MAX, PINNED("tunnels"));
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow, flows, FLOW_MAX, PINNED("flows"));
BPF_TABLE_PINNED("hash", struct lb_vip_key, struct lb_service, lb_vips, LB_VIP_MAX, PINNED("lb_vips"));
BPF_TABLE_PINNED("hash", struct lb_backend_key, struct lb_backend, lb_backends, LB_BACKEND_MAX, PINNED("lb_backends"));
BPF_TABLE_PINNED("lru_hash", struct lb_revnat_key, struct lb_revnat, lb_revnat, LB_REVNAT_MAX, PINNED("lb_revnat"));

#endif
