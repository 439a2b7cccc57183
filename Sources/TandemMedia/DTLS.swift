import TandemMediaCore
import COpenSSL


/// The relay's DTLS identity: a P-256 ECDSA certificate and the `SSL_CTX` every leg's connection is
/// made from. OpenSSL allows concurrent `SSL_new` from one context, so one is shared by all loops.
public final class DTLSIdentity: @unchecked Sendable {
    let context: OpaquePointer
    /// The certificate's SHA-256 fingerprint, for `a=fingerprint` in the relay's SDP.
    public let fingerprint: Fingerprint

    /// The certificate in PEM, for operators and for loading into another TLS stack.
    public let certificatePEM: String

    /// A fresh self-signed certificate, valid from yesterday for `days` days.
    public static func generate(commonName: String = "tandem", days: Int = 30) throws -> DTLSIdentity {
        let (certificate, key) = try generatePEM(commonName: commonName, days: days)
        return try load(certificatePEM: certificate, keyPEM: key)
    }

    /// A fresh self-signed P-256 certificate and its private key, both PEM.
    public static func generatePEM(commonName: String = "tandem", days: Int = 30) throws -> (certificate: String, key: String) {
        guard let key = tandem_ec_p256_key() else { throw MediaError.openSSL(.certificate, "P-256 key generation failed") }
        defer { EVP_PKEY_free(key) }
        guard let cert = X509_new() else { throw MediaError.openSSL(.certificate, "X509_new failed") }
        defer { X509_free(cert) }
        var serial: UInt32 = 0
        RAND_bytes(&serial, 4)
        X509_set_version(cert, 2)
        ASN1_INTEGER_set(X509_get_serialNumber(cert), Int(serial & 0x7FFF_FFFF) | 1)
        X509_gmtime_adj(X509_getm_notBefore(cert), -86_400)
        X509_gmtime_adj(X509_getm_notAfter(cert), days * 86_400)
        X509_set_pubkey(cert, key)
        let name = X509_get_subject_name(cert)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, commonName, -1, -1, 0)
        X509_set_issuer_name(cert, name)
        guard X509_sign(cert, key, EVP_sha256()) > 0 else { throw MediaError.openSSL(.certificate, "signing the certificate failed") }
        func pem(_ write: (OpaquePointer) -> Int32) throws -> String {
            guard let bio = BIO_new(BIO_s_mem()) else { throw MediaError.openSSL(.certificate, "BIO_new failed") }
            defer { BIO_free(bio) }
            guard write(bio) == 1 else { throw MediaError.openSSL(.certificate, "writing PEM failed") }
            var bytes = [UInt8](repeating: 0, count: Int(BIO_ctrl_pending(bio)))
            let n = BIO_read(bio, &bytes, Int32(bytes.count))
            return String(decoding: bytes.prefix(Int(max(0, n))), as: UTF8.self)
        }
        return (
            try pem { PEM_write_bio_X509($0, cert) },
            try pem { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) }
        )
    }

    /// A configured certificate and private key, both PEM.
    public static func load(certificatePEM: String, keyPEM: String) throws -> DTLSIdentity {
        func read<T>(_ pem: String, _ reader: (OpaquePointer?) -> T?) -> T? {
            var bytes = Array(pem.utf8)
            return bytes.withUnsafeMutableBytes { raw in
                guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
                defer { BIO_free(bio) }
                return reader(bio)
            }
        }
        guard let cert = read(certificatePEM, { PEM_read_bio_X509($0, nil, nil, nil) }) else {
            throw MediaError.openSSL(.certificate, "the DTLS certificate is not PEM")
        }
        defer { X509_free(cert) }
        guard let key = read(keyPEM, { PEM_read_bio_PrivateKey($0, nil, nil, nil) }) else {
            throw MediaError.openSSL(.certificate, "the DTLS private key is not PEM")
        }
        defer { EVP_PKEY_free(key) }
        return try DTLSIdentity(certificate: cert, key: key, pem: certificatePEM)
    }

    private init(certificate: OpaquePointer, key: OpaquePointer, pem: String) throws {
        certificatePEM = pem
        guard let ctx = SSL_CTX_new(DTLS_method()) else { throw MediaError.openSSL(.certificate, "SSL_CTX_new failed") }
        context = ctx
        guard SSL_CTX_use_certificate(ctx, certificate) == 1, SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1
        else {
            SSL_CTX_free(ctx)
            throw MediaError.openSSL(.certificate, "the DTLS certificate and key do not match")
        }
        _ = tandem_ssl_ctx_dtls12_only(ctx)
        // The peer's certificate is self-signed: it is trusted by its SDP fingerprint, checked once the
        // handshake is done, not by a chain.
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT) { _, _ in 1 }
        guard SSL_CTX_set_tlsext_use_srtp(ctx, SRTPProfile.openSSLList) == 0 else {
            SSL_CTX_free(ctx)
            throw MediaError.openSSL(.certificate, "OpenSSL refused the SRTP profiles")
        }
        guard let fp = Fingerprint.of(certificate, algorithm: "sha-256") else {
            SSL_CTX_free(ctx)
            throw MediaError.openSSL(.certificate, "fingerprinting the certificate failed")
        }
        fingerprint = fp
    }

    deinit { SSL_CTX_free(context) }
}

/// One DTLS association over ICE: datagrams in through a memory BIO, datagrams out one per write
/// through a sink BIO, the retransmission timer driven by the owner. Confined to one loop thread.
public final class DTLSTransport {
    public enum Event: Sendable, Equatable {
        /// The handshake finished and the peer's certificate matched its SDP fingerprint.
        case connected(local: SRTPKeyMaterial, remote: SRTPKeyMaterial)
        case failed(MediaError)
        /// The peer sent close_notify.
        case closed
    }

    /// Bytes DTLS may put in one datagram: below a 1280-byte IPv6 path with room for UDP and TURN.
    public static let mtu = 1200

    public let role: DTLSRole
    private let ssl: OpaquePointer
    private let input: OpaquePointer
    private let expected: Fingerprint
    /// Datagrams OpenSSL wrote since the owner last took them.
    private var outbox: [[UInt8]] = []
    private enum Phase { case handshaking, established, failed, closed }
    private var phase = Phase.handshaking

    public init(identity: DTLSIdentity, role: DTLSRole, remoteFingerprint: Fingerprint) throws(MediaError) {
        guard let ssl = SSL_new(identity.context) else { throw MediaError.openSSL(.dtlsFailed, "SSL_new failed") }
        guard let input = BIO_new(BIO_s_mem()), let output = BIO_new(DatagramSink.method) else {
            SSL_free(ssl)
            throw MediaError.openSSL(.dtlsFailed, "BIO_new failed")
        }
        self.ssl = ssl
        self.input = input
        self.role = role
        expected = remoteFingerprint
        tandem_bio_mem_eof_retry(input)
        BIO_set_init(output, 1)
        SSL_set_bio(ssl, input, output)
        BIO_set_data(output, Unmanaged.passUnretained(self).toOpaque())
        _ = tandem_ssl_set_mtu(ssl, Self.mtu)
        tandem_dtls_use_timer(ssl)
        if role == .client { SSL_set_connect_state(ssl) } else { SSL_set_accept_state(ssl) }
    }

    deinit {
        // SSL_free frees both BIOs; the sink's pointer back to us dies with it.
        SSL_free(ssl)
    }

    /// Starts the handshake (the client sends its ClientHello; the server waits).
    public func start() -> Event? {
        role == .client ? advance() : nil
    }

    /// One datagram from the peer (a DTLS record, demultiplexed by its first byte 20–63).
    public func receive(_ datagram: UnsafeRawBufferPointer) -> Event? {
        guard datagram.count > 0, datagram.count <= 16_384 else { return nil }
        _ = BIO_write(input, datagram.baseAddress, Int32(datagram.count))
        return advance()
    }

    public func receive(_ datagram: [UInt8]) -> Event? {
        datagram.withUnsafeBytes { receive($0) }
    }

    /// Milliseconds until `handleTimeout` is due, or nil when no retransmission is pending.
    public var timeoutMs: Int? {
        let ms = tandem_dtls_timeout_ms(ssl)
        return ms < 0 ? nil : ms
    }

    /// Retransmits the last flight if its timer expired. A handshake that gives up reports failure.
    public func handleTimeout() -> Event? {
        guard phase == .handshaking else { return nil }
        if tandem_dtls_handle_timeout(ssl) < 0 {
            phase = .failed
            return .failed(MediaError.openSSL(.dtlsTimeout, "the DTLS handshake timed out"))
        }
        return nil
    }

    /// Datagrams to send to the peer, in order.
    public func takeOutgoing() -> [[UInt8]] {
        defer { outbox.removeAll() }
        return outbox
    }

    /// Sends close_notify once the association is established, so the peer knows at once rather than
    /// when ICE consent runs out.
    public func close() {
        guard phase != .closed else { return }
        defer { phase = .closed }
        if phase == .established {
            ERR_clear_error()
            SSL_shutdown(ssl)
            ERR_clear_error()
        }
    }

    fileprivate func emit(_ bytes: UnsafeRawBufferPointer) {
        outbox.append(Array(bytes))
    }

    private func advance() -> Event? {
        guard phase == .handshaking else { return phase == .established ? drainApplicationData() : nil }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            let event = connected()
            if case .connected = event { phase = .established } else { phase = .failed }
            return event
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return nil
        default:
            phase = .failed
            return .failed(MediaError.openSSL(.dtlsFailed, "the DTLS handshake failed"))
        }
    }

    /// After the handshake only alerts matter (the relay carries no data channel). A datagram may pack
    /// several records, so every one is read and nothing stays behind in the memory BIO; the bound only
    /// guards against a loop (a 16 KB datagram holds at most about 1 300 empty records).
    private func drainApplicationData() -> Event? {
        ERR_clear_error()
        defer { ERR_clear_error() }
        var scratch = [UInt8](repeating: 0, count: 2048)
        for _ in 0..<4096 {
            let n = SSL_read(ssl, &scratch, Int32(scratch.count))
            if n > 0 { continue }
            if SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN { return .closed }
            return nil
        }
        return nil
    }

    // MARK: A peer's side, for tests

    /// Bytes written to this transport and not read by OpenSSL yet.
    var bufferedInput: Int { Int(BIO_ctrl_pending(input)) }

    /// Sends application data (which the relay never does; a peer might).
    func writeApplicationData(_ bytes: [UInt8]) -> Bool {
        ERR_clear_error()
        defer { ERR_clear_error() }
        return SSL_write(ssl, bytes, Int32(bytes.count)) == Int32(bytes.count)
    }

    /// Whether the association refuses renegotiation by its own setting.
    var refusesRenegotiation: Bool { tandem_ssl_refuses_renegotiation(ssl) != 0 }

    /// Asks for a renegotiation, as a client may try once the handshake is done.
    func renegotiate() -> Bool {
        ERR_clear_error()
        defer { ERR_clear_error() }
        tandem_ssl_allow_renegotiation(ssl)
        return SSL_renegotiate(ssl) == 1 && SSL_do_handshake(ssl) <= 1
    }

    private func connected() -> Event {
        guard let peer = SSL_get1_peer_certificate(ssl) else {
            return .failed(MediaError(.fingerprintMismatch, "the peer sent no certificate"))
        }
        defer { X509_free(peer) }
        guard let actual = Fingerprint.of(peer, algorithm: expected.algorithm), actual == expected else {
            SSL_shutdown(ssl)
            return .failed(MediaError(.fingerprintMismatch, "the peer's certificate does not match the fingerprint in its SDP"))
        }
        guard let selected = SSL_get_selected_srtp_profile(ssl), let profile = SRTPProfile(rawValue: UInt16(selected.pointee.id)) else {
            return .failed(MediaError(.dtlsFailed, "no SRTP profile was negotiated"))
        }
        let k = profile.keyLength
        let s = profile.saltLength
        var material = [UInt8](repeating: 0, count: 2 * (k + s))
        let label = "EXTRACTOR-dtls_srtp"
        guard SSL_export_keying_material(ssl, &material, material.count, label, label.utf8.count, nil, 0, 0) == 1 else {
            return .failed(MediaError.openSSL(.dtlsFailed, "exporting SRTP keys failed"))
        }
        // RFC 5764 4.2: client key | server key | client salt | server salt.
        let client = SRTPKeyMaterial(profile: profile, keyAndSalt: Array(material[0..<k] + material[2 * k..<2 * k + s]))
        let server = SRTPKeyMaterial(profile: profile, keyAndSalt: Array(material[k..<2 * k] + material[2 * k + s..<2 * k + 2 * s]))
        return role == .client ? .connected(local: client, remote: server) : .connected(local: server, remote: client)
    }
}

/// A BIO that hands each DTLS write to its transport as one datagram.
private enum DatagramSink {
    nonisolated(unsafe) static let method: OpaquePointer = {
        let method = BIO_meth_new(tandem_bio_type_sink(), "tandem-dtls-datagram")!
        BIO_meth_set_write(method) { bio, data, length in
            guard let bio, let data, length > 0, let owner = BIO_get_data(bio) else { return length }
            Unmanaged<DTLSTransport>.fromOpaque(owner).takeUnretainedValue().emit(UnsafeRawBufferPointer(start: data, count: Int(length)))
            return length
        }
        BIO_meth_set_ctrl(method) { _, command, _, _ in
            switch command {
            case BIO_CTRL_FLUSH: 1
            case BIO_CTRL_DGRAM_QUERY_MTU, BIO_CTRL_DGRAM_GET_FALLBACK_MTU: Int(DTLSTransport.mtu)
            case BIO_CTRL_WPENDING, BIO_CTRL_PENDING: 0
            default: 0
            }
        }
        return method
    }()
}

extension MediaError {
    /// An error with OpenSSL's queued reasons appended (and the queue emptied, since it is per thread).
    package static func openSSL(_ code: Code, _ what: String) -> MediaError {
        var reasons: [String] = []
        while case let e = ERR_get_error(), e != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return MediaError(code, reasons.isEmpty ? what : "\(what): \(reasons.joined(separator: "; "))")
    }
}

extension Fingerprint {
    /// The fingerprint of `certificate` under this one's algorithm.
    static func of(_ certificate: OpaquePointer, algorithm: String) -> Fingerprint? {
        guard let name = digestName(algorithm), let md = EVP_get_digestbyname(name) else { return nil }
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var n: UInt32 = 0
        guard X509_digest(certificate, md, &out, &n) == 1 else { return nil }
        return Fingerprint(algorithm: algorithm, digest: Array(out.prefix(Int(n))))
    }
}
