import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The server's certificate chain and key, read again when the operator asks (SIGHUP): every TLS
/// handshake after that (HTTPS, WSS and TURNS) is served with the new pair, while connections already
/// open keep theirs. A pair that cannot be read is refused and the one in use stays.
public final class CertificateReloader: Sendable {
    public let certificatePath: String
    public let keyPath: String
    private let current: NIOLockedValueBox<NIOSSLContextConfigurationOverride>

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

    /// Hands each handshake the pair read last.
    var callback: NIOSSLContextCallback {
        { [current] _, promise in promise.succeed(current.withLockedValue { $0 }) }
    }

    static func read(certificate: String, key: String) throws -> NIOSSLContextConfigurationOverride {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate)
        } catch {
            throw SetupError("cannot read the TLS certificate \(certificate): \(error)")
        }
        guard !chain.isEmpty else { throw SetupError("no certificate in \(certificate)") }
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw SetupError("cannot read the TLS private key \(key): \(error)")
        }
        var pair = NIOSSLContextConfigurationOverride()
        pair.certificateChain = chain.map { .certificate($0) }
        pair.privateKey = .privateKey(privateKey)
        return pair
    }
}
