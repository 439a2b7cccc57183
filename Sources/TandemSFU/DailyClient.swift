import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import TandemProtocol

/// How to reach a Daily-style REST API, and how hard to push it.
public struct DailyConfiguration: Sendable, Equatable {
    /// The API's base, e.g. `https://api.daily.co/v1`.
    public var baseURL: String
    public var apiKey: String
    /// One request's bound, connection included.
    public var requestTimeout: Duration = .seconds(5)
    public var retry = RetryPolicy()
    /// Client-side pacing under Daily's documented limits: 20 requests/s, and 2/s for room deletes.
    public var requestsPerSecond: Double = 20
    public var deletesPerSecond: Double = 2

    public init(baseURL: String, apiKey: String) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.apiKey = apiKey
    }
}

/// The SFU adapter for Daily's REST API (rooms and meeting tokens). Requests are paced below the
/// documented rate limits; 429 and 5xx answers are retried with exponential backoff to a bound, so a
/// call always ends with a room, a token or an ``SFUError``.
public final class DailyClient: SFUProvider {
    public let name = "daily"
    public let configuration: DailyConfiguration
    private let http: HTTPClient
    private let pacers: NIOLockedValueBox<(all: RequestPacer, deletes: RequestPacer)>
    private let origin = ContinuousClock.now
    private let logger: Logger

    public init(configuration: DailyConfiguration, http: HTTPClient = .shared, logger: Logger = Logger(label: "tandem.sfu")) {
        self.configuration = configuration
        self.http = http
        self.logger = logger
        pacers = NIOLockedValueBox(
            (RequestPacer(perSecond: configuration.requestsPerSecond), RequestPacer(perSecond: configuration.deletesPerSecond)))
    }

    // MARK: SFUProvider

    public func room(session: String, maxParticipants: Int, expiresAt: Int64) async throws(SFUError) -> SFURoom {
        let body = JSON.object([
            "name": .string(session), "privacy": .string("private"),
            "properties": .object(["exp": .number(Double(expiresAt)), "max_participants": .number(Double(maxParticipants))]),
        ])
        do {
            return try Self.room(from: try await call(.POST, "/rooms", body: body))
        } catch let error where error.status == 400 && error.type == "invalid-request-error" {
            // Daily answers a taken name with a plain 400 whose wording may change: the room itself tells.
            guard let existing = try? await call(.GET, "/rooms/\(session)"), let room = try? Self.room(from: existing) else {
                throw error
            }
            // A room left by an earlier run may close sooner than its tokens would: its life is extended.
            guard let exp = room.expiresAt, exp < expiresAt else { return room }
            return try Self.room(from: try await call(.POST, "/rooms/\(session)", body: .object(["properties": .object(["exp": .number(Double(expiresAt))])])))
        }
    }

    public func token(room: SFURoom, participant: String, expiresAt: Int64) async throws(SFUError) -> String {
        let body = JSON.object([
            "properties": .object([
                "room_name": .string(room.name), "user_id": .string(participant), "exp": .number(Double(expiresAt)),
                "is_owner": .bool(false),
            ])
        ])
        guard let token = try await call(.POST, "/meeting-tokens", body: body)["token"]?.stringValue, !token.isEmpty else {
            throw SFUError(.badResponse, status: 200, info: "no token in the answer")
        }
        return token
    }

    public func deleteRoom(named name: String) async throws(SFUError) {
        do {
            _ = try await call(.DELETE, "/rooms/\(name)")
        } catch let error where error.code == .notFound {
            // Gone already (an expired room answers 404 with `deleted: true`).
        }
    }

    // MARK: HTTP

    /// One API call with pacing and retries; the answer's JSON object on 2xx.
    func call(_ method: HTTPMethod, _ path: String, body: JSON? = nil) async throws(SFUError) -> JSON {
        var tries = 0
        while true {
            // Deletes have their own, lower limit, and never hold up the calls a switch may wait for.
            // A call waits its turn for at most the request timeout: past that the queue is full, and the
            // caller hears so at once (the room answers provider_unavailable) instead of waiting without end.
            let limit = configuration.requestTimeout
            let wait = pacers.withLockedValue { p in
                let now = ContinuousClock.now - origin
                return method == .DELETE ? p.deletes.reserve(now: now, maxWait: limit) : p.all.reserve(now: now, maxWait: limit)
            }
            guard let wait else {
                throw SFUError(.rateLimited, info: "more calls are waiting for the SFU service than can go within \(limit)")
            }
            if wait > .zero { try? await Task.sleep(for: wait) }
            // A cancelled call (a room delete that a new session overtook) is not sent.
            if Task.isCancelled { throw SFUError(.transport, info: "cancelled before it was sent") }
            tries += 1
            let failure: SFUError
            let retry: RetryPolicy.Failure
            do {
                return try await once(method, path, body: body)
            } catch {
                failure = error.error
                switch failure.code {
                case .rateLimited: retry = .rateLimited(retryAfter: error.retryAfter)
                case .unavailable, .timeout, .transport: retry = .serverError
                default: retry = .final
                }
            }
            guard let delay = configuration.retry.delay(after: tries, retry) else { throw failure }
            logger.debug("SFU call retried", metadata: ["path": "\(path)", "error": "\(failure)", "tries": "\(tries)"])
            try? await Task.sleep(for: delay)
        }
    }

    private func once(_ method: HTTPMethod, _ path: String, body: JSON?) async throws(FailedTry) -> JSON {
        var request = HTTPClientRequest(url: configuration.baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(configuration.apiKey)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body.encoded))
        }
        let timeout = configuration.requestTimeout
        let prepared = request
        let answer: (status: Int, bytes: [UInt8], retryAfter: String?)?
        do {
            // The deadline covers the body too: the client's own stops once the head has arrived.
            answer = try await withThrowingTaskGroup(of: (status: Int, bytes: [UInt8], retryAfter: String?)?.self) { [http] group in
                group.addTask {
                    let response = try await http.execute(prepared, timeout: TimeAmount(timeout))
                    var buffer = try await response.body.collect(upTo: 1 << 20)
                    return (Int(response.status.code), buffer.readBytes(length: buffer.readableBytes) ?? [], response.headers.first(name: "Retry-After"))
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            answer = nil
        } catch {
            throw FailedTry(error: SFUError(.transport, info: "\(method) \(path): \(error)"))
        }
        guard let (status, bytes, retryAfter) = answer else {
            throw FailedTry(error: SFUError(.timeout, info: "no answer from \(configuration.baseURL) within \(timeout)"))
        }
        let json = try? JSONParser.parse(bytes)
        if (200..<300).contains(status) {
            guard let json, json.isObject else {
                throw FailedTry(error: SFUError(.badResponse, status: status, info: "the answer is not a JSON object"))
            }
            return json
        }
        let type = json?["error"]?.stringValue
        throw FailedTry(
            error: SFUError(type == "authorization-header-error" ? .unauthorized : Self.code(status), status: status, type: type, info: json?["info"]?.stringValue),
            retryAfter: retryAfter.flatMap { Int($0) }.map { .seconds($0) })
    }

    static func code(_ status: Int) -> SFUError.Code {
        switch status {
        case 400: .badRequest
        case 401, 403: .unauthorized
        case 404: .notFound
        case 429: .rateLimited
        case 500...599: .unavailable
        default: .badResponse
        }
    }

    static func room(from json: JSON) throws(SFUError) -> SFURoom {
        guard let name = json["name"]?.stringValue, let url = json["url"]?.stringValue else {
            throw SFUError(.badResponse, status: 200, info: "a room without name or url")
        }
        return SFURoom(name: name, url: url, expiresAt: json["config"]?["exp"]?.intValue.map(Int64.init))
    }
}

/// A failed try, with the wait a 429 asked for.
struct FailedTry: Error {
    var error: SFUError
    var retryAfter: Duration?
}
