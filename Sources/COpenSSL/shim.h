#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#include <openssl/bio.h>
#include <openssl/rand.h>
#include <sys/time.h>

/* The OpenSSL calls below are macros (or need macro constants), which do not import into Swift. */

static inline EVP_PKEY *tandem_ec_p256_key(void) { return EVP_EC_gen("P-256"); }

static inline long tandem_ssl_set_mtu(SSL *ssl, long mtu) {
    SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
    SSL_set_mtu(ssl, mtu);
    return DTLS_set_link_mtu(ssl, mtu);
}

static inline int tandem_ssl_ctx_dtls12_only(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_QUERY_MTU | SSL_OP_NO_RENEGOTIATION);
    return (int)SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
}

/* Milliseconds until the DTLS retransmission timer fires, or -1 when none runs. */
static inline long tandem_dtls_timeout_ms(SSL *ssl) {
    struct timeval tv;
    if (DTLSv1_get_timeout(ssl, &tv) != 1) return -1;
    return (long)tv.tv_sec * 1000 + (long)(tv.tv_usec + 999) / 1000;
}

static inline int tandem_dtls_handle_timeout(SSL *ssl) { return (int)DTLSv1_handle_timeout(ssl); }

/* Renegotiation is refused whatever the library's default (OpenSSL 3 refuses a client's, 1.1 did not). */
static inline int tandem_ssl_refuses_renegotiation(SSL *ssl) { return (SSL_get_options(ssl) & SSL_OP_NO_RENEGOTIATION) != 0; }

/* Lets a test's client ask to renegotiate. */
static inline void tandem_ssl_allow_renegotiation(SSL *ssl) { SSL_clear_options(ssl, SSL_OP_NO_RENEGOTIATION); }

static inline void tandem_bio_mem_eof_retry(BIO *bio) { BIO_set_mem_eof_return(bio, -1); }

static inline int tandem_bio_type_sink(void) { return BIO_get_new_index() | BIO_TYPE_SOURCE_SINK; }

/* Retransmission back-off: 400 ms first (OpenSSL's 1 s default is slow for a call that is waiting to
   start), doubling, at most 4 s between flights. */
static unsigned int tandem_dtls_timer(SSL *ssl, unsigned int previous_us) {
    (void)ssl;
    if (previous_us == 0) return 400000;
    return previous_us >= 2000000 ? 4000000 : previous_us * 2;
}

static inline void tandem_dtls_use_timer(SSL *ssl) { DTLS_set_timer_cb(ssl, tandem_dtls_timer); }
