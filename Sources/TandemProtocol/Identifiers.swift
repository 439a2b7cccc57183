/// A session id: 1 to 128 characters of `[A-Za-z0-9_-]`. The same id names the room on every provider.
public struct SessionID: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: String

    public init?(_ raw: String) {
        guard Self.isValid(raw) else { return nil }
        rawValue = raw
    }

    public static func isValid(_ raw: String) -> Bool {
        let utf8 = raw.utf8
        guard (1...128).contains(utf8.count) else { return false }
        return utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
        }
    }

    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A participant id, assigned by the server and opaque to clients.
public struct ParticipantID: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: String
    public init(_ raw: String) { rawValue = raw }
    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// The reserved peer id of the server's own media endpoint.
    public static let server = ParticipantID("server")

    /// A new random id (`p` followed by 16 base-32 characters), never equal to `server`.
    public static func random<G: RandomNumberGenerator>(using rng: inout G) -> ParticipantID {
        ParticipantID("p" + RandomText.base32(count: 16, using: &rng))
    }
}

/// Random tokens for ids and resume keys.
public enum RandomText {
    static let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789".utf8)

    public static func base32<G: RandomNumberGenerator>(count: Int, using rng: inout G) -> String {
        var out = [UInt8]()
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(alphabet[Int(rng.next(upperBound: UInt8(32)))]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The media providers a session can be on.
public enum ProviderName: String, Sendable, CaseIterable, Hashable, Comparable, CustomStringConvertible {
    case p2p, relay, sfu

    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool {
        a.order < b.order
    }
    private var order: Int {
        switch self {
        case .p2p: 0
        case .relay: 1
        case .sfu: 2
        }
    }
}
