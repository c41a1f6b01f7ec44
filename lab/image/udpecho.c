/* udpecho: a tiny static UDP echo server and client for the test image
 * (busybox's nc has no UDP mode).
 *   udpecho serve PORT            echo every datagram back to its sender
 *   udpecho send HOST PORT COUNT  send COUNT datagrams, print how many came back
 *   udpecho wait HOST PORT SECS   send every 10 ms until one comes back (exit 0) or SECS pass (exit 1)
 *   udpecho payload HOST PORT HEX COUNT   send COUNT datagrams carrying the bytes HEX
 *   udpecho frame IFACE HEX COUNT send the Ethernet frame HEX COUNT times on IFACE (raw socket;
 *                                 for the anti-spoofing tests: any source address and MAC)
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

static int serve(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    char buf[65536];
    for (;;) {
        struct sockaddr_in peer; socklen_t len = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(fd, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}

/* A UDP socket to HOST:PORT whose receives time out after `usec`; -1 (after a message) if HOST is bad. */
static int client(const char *host, int port, long usec, struct sockaddr_in *a) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = usec / 1000000, .tv_usec = usec % 1000000};
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, host, &a->sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); return -1; }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int send_some(const char *host, int port, int count) {
    struct sockaddr_in a;
    int fd = client(host, port, 1000000, &a);
    if (fd < 0) return 2;
    int got = 0;
    for (int i = 0; i < count; i++) {
        char msg[64], buf[64];
        int n = snprintf(msg, sizeof msg, "xmasq-udp-%d", i);
        sendto(fd, msg, n, 0, (struct sockaddr *)&a, sizeof a);
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == n && memcmp(buf, msg, n) == 0) got++;
    }
    printf("replies=%d/%d\n", got, count);
    return got == count ? 0 : 1;
}

static int wait_reply(const char *host, int port, int secs) {
    struct sockaddr_in a;
    int fd = client(host, port, 10000, &a);
    if (fd < 0) return 2;
    for (int i = 0; i < secs * 100; i++) {
        char buf[16];
        sendto(fd, "xmasq-wait", 10, 0, (struct sockaddr *)&a, sizeof a);
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
    struct sockaddr_in a;
    int fd = client(host, port, 1000, &a);
    if (fd < 0 || n < 0) { fprintf(stderr, "bad host or hex\n"); return 2; }
    for (int i = 0; i < count; i++) sendto(fd, buf, n, 0, (struct sockaddr *)&a, sizeof a);
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
