/// A room on an SFU, named after the session it serves.
public struct SFURoom: Sendable, Equatable {
    public var name: String
    /// Where the app's SFU SDK joins the room.
    public var url: String
    /// When the SFU stops admitting to it, seconds since 1970, if it said.
    public var expiresAt: Int64?

    public init(name: String, url: String, expiresAt: Int64? = nil) {
        self.name = name
        self.url = url
        self.expiresAt = expiresAt
    }
}

/// An SFU service the arbiter can move a session to: it opens a room per session and mints a token per
/// participant. Every call ends, with a result or an ``SFUError``, within the adapter's own bounds.
public protocol SFUProvider: Sendable {
    /// The name clients see in `provider.sfu.provider` (`daily`).
    var name: String { get }
    /// The session's room, created or, when it exists already, reused.
    func room(session: String, maxParticipants: Int, expiresAt: Int64) async throws(SFUError) -> SFURoom
    /// A token that admits one participant (by its id) to `room` until `expiresAt`.
    func token(room: SFURoom, participant: String, expiresAt: Int64) async throws(SFUError) -> String
    /// Deletes a room; a room that is gone already is not an error.
    func deleteRoom(named name: String) async throws(SFUError)
}

/// Why an SFU call failed, with what the service said.
public struct SFUError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        /// The service refused the request as malformed (400).
        case badRequest = "bad_request"
        /// A missing or malformed API key (400 `authorization-header-error`) or a wrong one (401, 403).
        case unauthorized
        case notFound = "not_found"
        /// Still rate-limited (429) after the allowed retries.
        case rateLimited = "rate_limited"
        /// Server errors (5xx) after the allowed retries.
        case unavailable
        /// No answer in time.
        case timeout
        /// The connection failed.
        case transport
        /// An answer that is not what the API documents.
        case badResponse = "bad_response"
    }

    public var code: Code
    /// The HTTP status, when there was an answer.
    public var status: Int?
    /// The service's own error type (Daily's `error`, e.g. `rate-limit-error`).
    public var type: String?
    /// The service's explanation (Daily's `info`), or ours.
    public var info: String?

    public init(_ code: Code, status: Int? = nil, type: String? = nil, info: String? = nil) {
        self.code = code
        self.status = status
        self.type = type
        self.info = info
    }

    public var description: String {
        var text = code.rawValue
        if let status { text += " (HTTP \(status)" + (type.map { " \($0)" } ?? "") + ")" }
        if let info { text += ": \(info)" }
        return text
    }
}
