/// A STUN method (RFC 8489 §5; TURN's methods from RFC 8656).
public struct STUNMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let binding = STUNMethod(rawValue: 0x001)
    public static let allocate = STUNMethod(rawValue: 0x003)
    public static let refresh = STUNMethod(rawValue: 0x004)
    public static let send = STUNMethod(rawValue: 0x006)
    public static let data = STUNMethod(rawValue: 0x007)
    public static let createPermission = STUNMethod(rawValue: 0x008)
    public static let channelBind = STUNMethod(rawValue: 0x009)

    public var description: String {
        switch self {
        case .binding: "Binding"
        case .allocate: "Allocate"
        case .refresh: "Refresh"
        case .send: "Send"
        case .data: "Data"
        case .createPermission: "CreatePermission"
        case .channelBind: "ChannelBind"
        default: "method 0x\(String(rawValue, radix: 16))"
        }
    }
}

/// The class bits of a STUN message type.
public enum STUNClass: UInt8, Sendable {
    case request = 0
    case indication = 1
    case success = 2
    case error = 3
}

/// The 96-bit transaction id.
public struct TransactionID: Hashable, Sendable {
    public var high: UInt32
    public var low: UInt64

    public init(high: UInt32, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// 12 bytes.
    public init<C: Collection<UInt8>>(bytes: C) {
        precondition(bytes.count == 12)
        self.init(high: UInt32(bigEndianBytes: bytes.prefix(4)), low: UInt64(bigEndianBytes: bytes.dropFirst(4)))
    }

    public static func random() -> TransactionID {
        var g = SystemRandomNumberGenerator()
        return TransactionID(high: g.next(), low: g.next())
    }

    public var bytes: [UInt8] {
        high.bigEndianBytes + low.bigEndianBytes
    }
}

/// Attribute types this server reads or writes (IANA "STUN Attributes").
public enum STUNAttribute {
    public static let mappedAddress: UInt16 = 0x0001
    public static let username: UInt16 = 0x0006
    public static let messageIntegrity: UInt16 = 0x0008
    public static let errorCode: UInt16 = 0x0009
    public static let unknownAttributes: UInt16 = 0x000A
    public static let channelNumber: UInt16 = 0x000C
    public static let lifetime: UInt16 = 0x000D
    public static let bandwidth: UInt16 = 0x0010
    public static let xorPeerAddress: UInt16 = 0x0012
    public static let data: UInt16 = 0x0013
    public static let realm: UInt16 = 0x0014
    public static let nonce: UInt16 = 0x0015
    public static let xorRelayedAddress: UInt16 = 0x0016
    public static let requestedAddressFamily: UInt16 = 0x0017
    public static let evenPort: UInt16 = 0x0018
    public static let requestedTransport: UInt16 = 0x0019
    public static let dontFragment: UInt16 = 0x001A
    public static let messageIntegritySHA256: UInt16 = 0x001C
    public static let passwordAlgorithm: UInt16 = 0x001D
    public static let userhash: UInt16 = 0x001E
    public static let xorMappedAddress: UInt16 = 0x0020
    public static let reservationToken: UInt16 = 0x0022
    public static let priority: UInt16 = 0x0024
    public static let useCandidate: UInt16 = 0x0025
    public static let padding: UInt16 = 0x0026
    public static let responsePort: UInt16 = 0x0027
    public static let additionalAddressFamily: UInt16 = 0x8000
    public static let addressErrorCode: UInt16 = 0x8001
    public static let passwordAlgorithms: UInt16 = 0x8002
    public static let software: UInt16 = 0x8022
    public static let alternateServer: UInt16 = 0x8023
    public static let fingerprint: UInt16 = 0x8028
    public static let iceControlled: UInt16 = 0x8029
    public static let iceControlling: UInt16 = 0x802A
    public static let responseOrigin: UInt16 = 0x802B

    /// Types in 0x0000–0x7FFF must be understood; an unknown one fails the request with 420.
    public static func isComprehensionRequired(_ type: UInt16) -> Bool { type < 0x8000 }
}

/// STUN and TURN error codes (RFC 8489 §14.8, RFC 8656 §18).
public struct STUNErrorCode: RawRepresentable, Hashable, Sendable {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let tryAlternate = STUNErrorCode(rawValue: 300)
    public static let badRequest = STUNErrorCode(rawValue: 400)
    public static let unauthorized = STUNErrorCode(rawValue: 401)
    public static let forbidden = STUNErrorCode(rawValue: 403)
    public static let unknownAttribute = STUNErrorCode(rawValue: 420)
    public static let allocationMismatch = STUNErrorCode(rawValue: 437)
    public static let staleNonce = STUNErrorCode(rawValue: 438)
    public static let addressFamilyNotSupported = STUNErrorCode(rawValue: 440)
    public static let wrongCredentials = STUNErrorCode(rawValue: 441)
    public static let unsupportedTransport = STUNErrorCode(rawValue: 442)
    public static let peerAddressFamilyMismatch = STUNErrorCode(rawValue: 443)
    public static let allocationQuotaReached = STUNErrorCode(rawValue: 486)
    public static let serverError = STUNErrorCode(rawValue: 500)
    public static let insufficientCapacity = STUNErrorCode(rawValue: 508)

    /// The reason phrase the RFCs suggest.
    public var reason: String {
        switch rawValue {
        case 300: "Try Alternate"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 420: "Unknown Attribute"
        case 437: "Allocation Mismatch"
        case 438: "Stale Nonce"
        case 440: "Address Family not Supported"
        case 441: "Wrong Credentials"
        case 442: "Unsupported Transport Protocol"
        case 443: "Peer Address Family Mismatch"
        case 486: "Allocation Quota Reached"
        case 500: "Server Error"
        case 508: "Insufficient Capacity"
        default: "Error"
        }
    }
}

/// The magic cookie of every RFC 5389+ message.
public let stunMagicCookie: UInt32 = 0x2112_A442
