/* udpecho: a tiny static UDP echo server and client for the test image
 * (busybox's nc has no UDP mode).
 *   udpecho serve PORT            echo every datagram back to its sender (IPv4 and IPv6)
 *   udpecho send HOST PORT COUNT  send COUNT datagrams, print how many came back
 *   udpecho wait HOST PORT SECS   send every 10 ms until one comes back (exit 0) or SECS pass (exit 1)
 *   udpecho payload HOST PORT HEX COUNT   send COUNT datagrams carrying the bytes HEX
 *   udpecho frame IFACE HEX COUNT send the Ethernet frame HEX COUNT times on IFACE (raw socket;
 *                                 for the anti-spoofing tests: any source address and MAC)
 * HOST is an IPv4 or IPv6 address.
 */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* One socket for both versions (IPv4 arrives mapped); IPv4 alone where the kernel has no IPv6. */
static int serve(int port) {
    int fd = socket(AF_INET6, SOCK_DGRAM, 0), off = 0;
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) < 0) { perror("bind"); return 1; }
    } else if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0 || bind(fd, (struct sockaddr *)&a4, sizeof a4) < 0) {
        perror("bind");
        return 1;
    }
    char buf[65536];
    for (;;) {
        struct sockaddr_storage peer; socklen_t len = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(fd, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}

/* HOST:PORT, IPv4 or IPv6. */
struct peer { struct sockaddr_storage a; socklen_t len; };

/* A UDP socket for `to` (HOST:PORT) whose receives time out after `usec`; -1 (after a message) if
 * HOST is bad. Not connected: an ICMP error must not end a receive before its timeout. */
static int client(const char *host, int port, long usec, struct peer *to) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&to->a;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&to->a;
    memset(to, 0, sizeof *to);
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET, a4->sin_port = htons(port), to->len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6, a6->sin6_port = htons(port), to->len = sizeof *a6;
    } else {
        fprintf(stderr, "bad host %s\n", host);
        return -1;
    }
    int fd = socket(to->a.ss_family, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = usec / 1000000, .tv_usec = usec % 1000000};
    if (fd < 0) { perror("socket"); return -1; }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int send_some(const char *host, int port, int count) {
    struct peer to;
    int fd = client(host, port, 1000000, &to);
    if (fd < 0) return 2;
    int got = 0;
    for (int i = 0; i < count; i++) {
        char msg[64], buf[64];
        int n = snprintf(msg, sizeof msg, "xmasq-udp-%d", i);
        sendto(fd, msg, n, 0, (struct sockaddr *)&to.a, to.len);
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == n && memcmp(buf, msg, n) == 0) got++;
    }
    printf("replies=%d/%d\n", got, count);
    return got == count ? 0 : 1;
}

static int wait_reply(const char *host, int port, int secs) {
    struct peer to;
    int fd = client(host, port, 10000, &to);
    if (fd < 0) return 2;
    for (int i = 0; i < secs * 100; i++) {
        char buf[16];
        sendto(fd, "xmasq-wait", 10, 0, (struct sockaddr *)&to.a, to.len);
        if (recv(fd, buf, sizeof buf, 0) == 10) return 0;
    }
    return 1;
}

/* HEX into buf; its length, or -1. */
static int unhex(const char *hex, unsigned char *buf, int size) {
    int n = strlen(hex) / 2;
    if (n > size || strlen(hex) % 2) return -1;
    for (int i = 0; i < n; i++)
        if (sscanf(hex + 2 * i, "%2hhx", &buf[i]) != 1) return -1;
    return n;
}

static int send_payload(const char *host, int port, const char *hex, int count) {
    unsigned char buf[9000];
    int n = unhex(hex, buf, sizeof buf);
    struct peer to;
    int fd = client(host, port, 1000, &to);
    if (fd < 0 || n < 0) { fprintf(stderr, "bad host or hex\n"); return 2; }
    for (int i = 0; i < count; i++) sendto(fd, buf, n, 0, (struct sockaddr *)&to.a, to.len);
    return 0;
}

static int send_frame(const char *iface, const char *hex, int count) {
    unsigned char buf[9000];
    int n = unhex(hex, buf, sizeof buf);
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_ifindex = if_nametoindex(iface), .sll_halen = 6};
    if (n < 14 || fd < 0 || !a.sll_ifindex) { perror("frame"); return 2; }
    memcpy(a.sll_addr, buf, 6);
    for (int i = 0; i < count; i++)
        if (sendto(fd, buf, n, 0, (struct sockaddr *)&a, sizeof a) != n) { perror("sendto"); return 1; }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "payload") == 0) return send_payload(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]));
    if (argc == 5 && strcmp(argv[1], "frame") == 0) return send_frame(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "wait") == 0) return wait_reply(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "send") == 0) return send_some(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: udpecho serve PORT | send HOST PORT COUNT | wait HOST PORT SECS"
                    " | payload HOST PORT HEX COUNT | frame IFACE HEX COUNT\n");
    return 2;
}
