/// A certificate fingerprint as SDP carries it (`a=fingerprint:sha-256 AB:CD:…`, RFC 8122).
public struct Fingerprint: Sendable, Equatable, CustomStringConvertible {
    /// Lower-case hash name: `sha-256`, `sha-384`, `sha-512` or `sha-1`.
    public var algorithm: String
    public var digest: [UInt8]

    public init(algorithm: String, digest: [UInt8]) {
        self.algorithm = algorithm.lowercased()
        self.digest = digest
    }

    /// Parses `sha-256 AB:CD:…`; nil for anything else.
    public init?(sdpValue: some StringProtocol) {
        let parts = sdpValue.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, Self.digestName(parts[0].lowercased()) != nil else { return nil }
        var bytes: [UInt8] = []
        for hex in parts[1].split(separator: ":", omittingEmptySubsequences: false) {
            guard hex.count == 2, let b = UInt8(hex, radix: 16) else { return nil }
            bytes.append(b)
        }
        guard bytes.count >= 20, bytes.count <= 64 else { return nil }
        self.init(algorithm: String(parts[0]), digest: bytes)
    }

    public var description: String {
        algorithm + " " + digest.map { b in
            let s = String(b, radix: 16, uppercase: true)
            return b < 16 ? "0" + s : s
        }.joined(separator: ":")
    }

    package static func digestName(_ algorithm: String) -> String? {
        switch algorithm {
        case "sha-1": "SHA1"
        case "sha-256": "SHA256"
        case "sha-384": "SHA384"
        case "sha-512": "SHA512"
        default: nil
        }
    }
}
