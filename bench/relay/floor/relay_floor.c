#include "relay_floor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <srtp2/srtp.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const uint8_t key_in[28] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28};
static const uint8_t key_out[28] = {28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};

static srtp_t make_session(const uint8_t *key, srtp_ssrc_type_t type) {
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp);
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
    policy.ssrc.type = type;
    policy.key = (unsigned char *)key;
    policy.window_size = 1024;
    srtp_t session = NULL;
    if (srtp_create(&session, &policy) != srtp_err_status_ok) return NULL;
    return session;
}

static int bound_socket(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) return -1;
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0) return -1;
    socklen_t len = sizeof *addr;
    getsockname(fd, (struct sockaddr *)addr, &len);
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

typedef struct {
    int sender, relay, sink;
    struct sockaddr_in relay_addr, sink_addr;
    int pps, size;
    double seconds;
    atomic_int stop;
    uint64_t relayed, received;
    double relay_cpu_us;
} floor_state;

static double now_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *send_loop(void *arg) {
    floor_state *s = arg;
    srtp_t out = make_session(key_in, ssrc_any_outbound);
    uint8_t packet[1500 + SRTP_MAX_TRAILER_LEN];
    uint16_t seq = 0;
    uint32_t ts = 0;
    double start = now_s(CLOCK_MONOTONIC);
    uint64_t sent = 0;
    while (!atomic_load(&s->stop)) {
        double due = (now_s(CLOCK_MONOTONIC) - start) * s->pps;
        while (sent < due) {
            memset(packet, 0xab, s->size);
            packet[0] = 0x80;
            packet[1] = 96;
            packet[2] = seq >> 8;
            packet[3] = seq & 0xff;
            memcpy(packet + 4, &ts, 4);
            uint32_t ssrc = htonl(0x11223344);
            memcpy(packet + 8, &ssrc, 4);
            int len = s->size - 16;
            srtp_protect(out, packet, &len);
            sendto(s->sender, packet, len, 0, (struct sockaddr *)&s->relay_addr, sizeof s->relay_addr);
            seq++;
            ts += 3000;
            sent++;
        }
        usleep(500);
    }
    srtp_dealloc(out);
    return NULL;
}

static void *sink_loop(void *arg) {
    floor_state *s = arg;
    uint8_t packet[2048];
    while (!atomic_load(&s->stop)) {
        if (recv(s->sink, packet, sizeof packet, 0) > 0) s->received++;
    }
    return NULL;
}

static void *relay_loop(void *arg) {
    floor_state *s = arg;
    srtp_t in = make_session(key_in, ssrc_any_inbound);
    srtp_t out = make_session(key_out, ssrc_any_outbound);
    uint8_t packet[1500 + SRTP_MAX_TRAILER_LEN];
    double end = now_s(CLOCK_MONOTONIC) + s->seconds;
    double cpu0 = now_s(CLOCK_THREAD_CPUTIME_ID);
    while (now_s(CLOCK_MONOTONIC) < end) {
        ssize_t n = recv(s->relay, packet, 1500, 0);
        if (n <= 0) continue;
        int len = (int)n;
        if (srtp_unprotect(in, packet, &len) != srtp_err_status_ok) continue;
        uint32_t ssrc = htonl(0x55667788);
        memcpy(packet + 8, &ssrc, 4);
        if (srtp_protect(out, packet, &len) != srtp_err_status_ok) continue;
        sendto(s->relay, packet, len, 0, (struct sockaddr *)&s->sink_addr, sizeof s->sink_addr);
        s->relayed++;
    }
    s->relay_cpu_us = (now_s(CLOCK_THREAD_CPUTIME_ID) - cpu0) * 1e6;
    srtp_dealloc(in);
    srtp_dealloc(out);
    return NULL;
}

int tandem_floor_run(int pps, int size, double seconds, tandem_floor_result *result) {
    /* libsrtp2 may have been initialised by the relay in this process already. */
    static int initialised = 0;
    if (!initialised) {
        srtp_init();
        initialised = 1;
    }
    floor_state s;
    memset(&s, 0, sizeof s);
    struct sockaddr_in sender_addr;
    s.sender = bound_socket(&sender_addr);
    s.relay = bound_socket(&s.relay_addr);
    s.sink = bound_socket(&s.sink_addr);
    if (s.sender < 0 || s.relay < 0 || s.sink < 0) return -2;
    s.pps = pps;
    s.size = size < 64 ? 64 : (size > 1400 ? 1400 : size);
    s.seconds = seconds;
    pthread_t sender, sink, relay;
    pthread_create(&sink, NULL, sink_loop, &s);
    pthread_create(&relay, NULL, relay_loop, &s);
    double start = now_s(CLOCK_MONOTONIC);
    pthread_create(&sender, NULL, send_loop, &s);
    pthread_join(relay, NULL);
    result->seconds = now_s(CLOCK_MONOTONIC) - start;
    atomic_store(&s.stop, 1);
    pthread_join(sender, NULL);
    pthread_join(sink, NULL);
    close(s.sender);
    close(s.relay);
    close(s.sink);
    result->relayed = s.relayed;
    result->received = s.received;
    result->relay_cpu_us = s.relay_cpu_us;
    return 0;
}
