#ifndef TANDEM_RELAY_FLOOR_H
#define TANDEM_RELAY_FLOOR_H
#include <stdint.h>

/* The C floor of a media relay, on loopback UDP: one thread receives SRTP, unprotects it (libsrtp2,
   AEAD_AES_128_GCM), rewrites the SSRC, protects it for the other side and sends it. A sender thread
   paces `pps` packets of `size` bytes; a sink thread counts what arrives. */
typedef struct {
    uint64_t relayed;        /* packets the relay thread forwarded */
    uint64_t received;       /* packets the sink got */
    double relay_cpu_us;     /* CPU time of the relay thread, microseconds */
    double seconds;          /* wall time of the measured window */
} tandem_floor_result;

/* Returns 0 on success, -2 when its loopback sockets cannot be bound. */
int tandem_floor_run(int pps, int size, double seconds, tandem_floor_result *result);

#endif
