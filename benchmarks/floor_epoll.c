/* The floor without an event loop: the least any master can do with the trickle, in C on
 * one level-triggered epoll, as bench_trickle.py's uvloop FloorClient does in Python: split
 * APDUs, count the I-frames and their objects, acknowledge every w (and every second, for
 * t2), answer TESTFR; no decode, no store, no checks. Its CPU per APDU is the kernel's share
 * of any master's (a wake-up, a recv and its TCP ACK per read), whatever loop it runs on.
 *
 * Usage: floor_epoll SESSIONS W COALESCE_MS PORT... (127.0.0.1). Commands on stdin, one JSON
 * line each on stdout: "stats" (counts and this process's CPU), "quit".
 * Built by bench_trickle.py with gcc -O2; loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 16)

typedef struct {
    int fd, carry, unacked;
    unsigned nr;
    uint8_t part[256];              /* a partial APDU carried to the next read */
} conn_t;

static long long apdus, objects, closed;
static uint8_t buf[BUF];

static void put(int fd, const uint8_t *p, size_t n) {
    /* S and U frames are 6 octets on a socket that is read: a short write means the peer
       stopped reading, which the benchmark does not do */
    if (write(fd, p, n) != (ssize_t)n && errno != EAGAIN)
        perror("write");
}

static void ack(conn_t *c) {
    uint8_t s[6] = {0x68, 4, 1, 0, (uint8_t)(c->nr << 1), (uint8_t)(c->nr >> 7)};
    c->unacked = 0;
    put(c->fd, s, 6);
}

static int readable(conn_t *c, int w) {
    static const uint8_t testfr_con[6] = {0x68, 4, 0x83, 0, 0, 0};
    memcpy(buf, c->part, c->carry);
    ssize_t n = recv(c->fd, buf + c->carry, BUF - c->carry, 0);
    if (n <= 0)
        return n == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
    size_t end = c->carry + n, i = 0;
    while (end - i >= 6) {
        size_t size = buf[i + 1] + 2;
        if (end - i < size)
            break;
        uint8_t ctl = buf[i + 2];
        if (!(ctl & 1)) {                                   /* I-frame */
            c->nr = (c->nr + 1) & 0x7FFF;
            c->unacked++;
            apdus++;
            if (size >= 8)                                  /* (its ASDU's object count) */
                objects += buf[i + 7] & 0x7F;
        } else if (ctl == 0x43) {
            put(c->fd, testfr_con, 6);
        }
        i += size;
    }
    c->carry = end - i;
    memcpy(c->part, buf + i, c->carry);
    if (c->unacked >= w)
        ack(c);
    return 1;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void stats(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    printf("{\"apdus\": %lld, \"objects\": %lld, \"closed\": %lld, \"user\": %.6f, "
           "\"system\": %.6f, \"wakeups\": %ld}\n", apdus, objects, closed,
           r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6,
           r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6, r.ru_nvcsw);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s SESSIONS W COALESCE_MS PORT...\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]), w = atoi(argv[2]), nports = argc - 4;
    double nap = atof(argv[3]) / 1e3;
    conn_t *conns = calloc(n, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};     /* NULL: stdin */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    static const uint8_t startdt_act[6] = {0x68, 4, 7, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons(atoi(argv[4 + i % nports]))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);     /* as uvloop does */
        conns[i].fd = fd;
        put(fd, startdt_act, 6);
        ev.data.ptr = &conns[i];
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    printf("{\"connected\": %d}\n", n);
    fflush(stdout);
    struct epoll_event evs[1024];
    char line[64];
    double next_t2 = now() + 1.0;
    for (;;) {
        int timeout = (int)((next_t2 - now()) * 1e3) + 1;
        int m = epoll_wait(ep, evs, 1024, timeout < 0 ? 0 : timeout), got = 0;
        for (int i = 0; i < m; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                if (!fgets(line, sizeof line, stdin) || !strncmp(line, "quit", 4))
                    return 0;
                stats();
            } else if (readable(c, w) < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->unacked = 0;
                closed++;
            } else {
                got = 1;
            }
        }
        if (now() >= next_t2) {
            for (int i = 0; i < n; i++)
                if (conns[i].unacked)
                    ack(&conns[i]);
            next_t2 += 1.0;
        }
        if (got && nap > 0) {                   /* as Master(coalesce=...) naps after a read */
            struct timespec t = {0, (long)(nap * 1e9)};
            nanosleep(&t, NULL);
        }
    }
}
