import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The server's certificate chain and key, read again when the operator asks (SIGHUP): every TLS
/// handshake after that (HTTPS, WSS and TURNS) is served with the new pair, while connections already
/// open keep theirs. A pair that cannot be read is refused and the one in use stays.
public final class CertificateReloader: Sendable {
    public let certificatePath: String
    public let keyPath: String
    private let current: NIOLockedValueBox<Pair>

    struct Pair: Sendable {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
    }

    public init(certificate: String, key: String) throws {
        certificatePath = certificate
        keyPath = key
        current = NIOLockedValueBox(try Self.read(certificate: certificate, key: key))
    }

    /// Reads the files again; throws (and changes nothing) when they do not hold a certificate and key.
    public func reload() throws {
        let fresh = try Self.read(certificate: certificatePath, key: keyPath)
        current.withLockedValue { $0 = fresh }
    }

    /// A server TLS configuration that starts with the pair read last and takes, at each handshake,
    /// whichever pair is current then. TLS 1.2 with forward secrecy and AEAD suites only: no static-RSA
    /// key exchange, no CBC (TLS 1.3's suites are all of that kind).
    public func serverConfiguration() -> TLSConfiguration {
        let pair = current.withLockedValue { $0 }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: pair.chain.map { .certificate($0) }, privateKey: .privateKey(pair.key))
        tls.minimumTLSVersion = .tlsv12
        tls.cipherSuites = [
            "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        ].joined(separator: ":")
        tls.sslContextCallback = { [current] _, promise in
            let pair = current.withLockedValue { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain.map { .certificate($0) }
            override.privateKey = .privateKey(pair.key)
            promise.succeed(override)
        }
        return tls
    }

    static func read(certificate: String, key: String) throws -> Pair {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate)
        } catch {
            throw SetupError("cannot read the TLS certificate \(certificate): \(error)")
        }
        guard !chain.isEmpty else { throw SetupError("no certificate in \(certificate)") }
        do {
            return Pair(chain: chain, key: try NIOSSLPrivateKey(file: key, format: .pem))
        } catch {
            throw SetupError("cannot read the TLS private key \(key): \(error)")
        }
    }
}
