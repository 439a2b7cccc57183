import Crypto
import Foundation
import SwiftASN1
import X509

/// Error while making or loading certificates.
public struct CertificateSetupError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A local certificate authority and a server certificate for `localhost`, `127.0.0.1` and `::1`, for
/// `serve --dev`. Browsers and test clients trust `ca.pem`; the server presents `server.pem`.
public enum DevCertificates {
    public struct Paths: Sendable {
        public let directory: String
        public var caCertificate: String { directory + "/ca.pem" }
        public var caKey: String { directory + "/ca-key.pem" }
        public var certificate: String { directory + "/server.pem" }
        public var key: String { directory + "/server-key.pem" }

        public init(directory: String) { self.directory = directory }
    }

    /// Makes the CA and server certificate in `directory` unless both are already there. Returns true if
    /// it made them.
    @discardableResult
    public static func ensure(in directory: String) throws -> Bool {
        let paths = Paths(directory: directory)
        let fm = FileManager.default
        if [paths.caCertificate, paths.certificate, paths.key].allSatisfy({ fm.fileExists(atPath: $0) }) { return false }
        try make(in: directory)
        return true
    }

    /// Makes a new CA and server certificate in `directory`, replacing any there.
    public static func make(in directory: String, validDays: Int = 825) throws {
        let paths = Paths(directory: directory)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let now = Date()
            let caKey = P256.Signing.PrivateKey()
            let caName = try DistinguishedName {
                OrganizationName("Tandem development")
                CommonName("Tandem development CA")
            }
            let ca = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
                notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
                issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: .init(caKey.publicKey))
                },
                issuerPrivateKey: .init(caKey))
            let serverKey = P256.Signing.PrivateKey()
            let server = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(serverKey.publicKey),
                notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
                issuer: caName, subject: try DistinguishedName { CommonName("localhost") }, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth])
                    SubjectAlternativeNames([
                        .dnsName("localhost"),
                        .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                        .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))),
                    ])
                },
                issuerPrivateKey: .init(caKey))
            try write(ca.serializeAsPEM().pemString, to: paths.caCertificate, mode: 0o644)
            try write(caKey.pemRepresentation, to: paths.caKey, mode: 0o600)
            try write(server.serializeAsPEM().pemString, to: paths.certificate, mode: 0o644)
            try write(serverKey.pemRepresentation, to: paths.key, mode: 0o600)
        } catch let error as CertificateSetupError {
            throw error
        } catch {
            throw CertificateSetupError(message: "cannot make development certificates in \(directory): \(error)")
        }
    }

    private static func write(_ text: String, to path: String, mode: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw CertificateSetupError(message: "cannot write \(path)")
        }
    }
}
