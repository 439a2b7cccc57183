import TandemMedia
import TandemMediaCore

/// Datagrams to a DTLS server before and during its handshake (2-byte length prefixes): the one fuzz
/// target that needs the C libraries (OpenSSL), so it lives apart from the pure ones.
public enum DTLSFuzzTarget {
    public static let name = "dtls"

    static let identity = try! DTLSIdentity.generate(commonName: "fuzz")

    public static func run(_ input: UnsafeRawBufferPointer) {
        guard let server = try? DTLSTransport(identity: identity, role: .server, remoteFingerprint: identity.fingerprint) else { return }
        var offset = 0
        while offset + 2 <= input.count {
            let length = Int(input[offset]) << 8 | Int(input[offset + 1])
            let end = min(input.count, offset + 2 + length)
            _ = server.receive(UnsafeRawBufferPointer(rebasing: input[(offset + 2)..<end]))
            _ = server.takeOutgoing()
            _ = server.handleTimeout()
            offset = end
        }
        server.close()
    }
}
