/// The error codes of PROTOCOL.md section 4.
public enum ErrorCode: String, Sendable, CaseIterable, Hashable {
    case badMessage = "bad_message"
    case unknownType = "unknown_type"
    case tooLarge = "too_large"
    case rateLimited = "rate_limited"
    case unauthorized
    case forbidden
    case sessionFull = "session_full"
    case notJoined = "not_joined"
    case alreadyJoined = "already_joined"
    case unknownPeer = "unknown_peer"
    case staleEpoch = "stale_epoch"
    case providerUnavailable = "provider_unavailable"
    case `internal`
    /// Added to the contract: a resume that cannot be honoured; the client must join afresh.
    case resumeFailed = "resume_failed"
}

/// WebSocket close codes used by the signaling channel.
public enum CloseCode {
    public static let normal: UInt16 = 1000
    /// A socket that stopped reading while too many messages were queued for it; it may resume.
    public static let slowConsumer: UInt16 = 1008
    public static let tooLarge: UInt16 = 1009
    public static let draining: UInt16 = 4000
    public static let unauthorized: UInt16 = 4401
    public static let forbidden: UInt16 = 4403
    public static let joinTimeout: UInt16 = 4408
    public static let replaced: UInt16 = 4409
    public static let rateLimited: UInt16 = 4429
}

/// A protocol-level error answered to a client as an `error` message.
public struct ProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String
    /// The offending message's `type`, when known.
    public let ref: String?

    public init(_ code: ErrorCode, _ message: String, ref: String? = nil) {
        self.code = code
        self.message = message
        self.ref = ref
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public func with(ref: String?) -> ProtocolError { ProtocolError(code, message, ref: ref ?? self.ref) }
}
