import Foundation
import TandemJWT
import TandemProtocol

/// A request as the stand-in's API sees it.
public struct StandInRequest: Sendable {
    public var method: String
    /// The path below `/v1`, e.g. `/rooms/abc`.
    public var path: String
    public var authorization: String?
    public var body: [UInt8]

    public init(method: String, path: String, authorization: String?, body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.authorization = authorization
        self.body = body
    }
}

/// An answer; it is also what a request handler throws to answer early with an error.
public struct StandInResponse: Error, Sendable, Equatable {
    public var status: Int
    public var body: JSON
}

/// The rooms and meeting-token endpoints of Daily's REST API as its documentation describes them:
/// validation, defaults, error shapes (`{error, info}`), rate limits (429 `rate-limit-error`) and room
/// expiry (an expired room is treated as deleted; deleting one answers 404 with `deleted: true`).
/// Meeting tokens are HS256 JWTs signed with the API key, with Daily's abbreviated claims. A value type
/// over an injected wall clock; the HTTP layer is ``DailyStandIn``.
public struct DailyAPI: Sendable {
    public struct Room: Sendable, Equatable {
        public var id: String
        public var name: String
        public var privacy: String
        public var createdAt: Int64
        public var exp: Int64?
        public var nbf: Int64?
        public var maxParticipants: Int?
    }

    public let apiKey: String
    public let domainID: String
    /// Rooms' `url` is this base followed by the room name.
    public var roomURLBase: String
    public private(set) var rooms: [String: Room] = [:]
    private var general: Bucket
    private var deletes: Bucket
    private let jwt: HS256JWT

    public static let maxRoomName = 128
    public static let maxUserID = 36
    public static let defaultMaxParticipants = 200

    public init(apiKey: String, roomURLBase: String, requestsPerSecond: Double = 20, deletesPerSecond: Double = 2) {
        self.apiKey = apiKey
        self.roomURLBase = roomURLBase
        domainID = UUID().uuidString.lowercased()
        jwt = HS256JWT(secret: apiKey)
        general = Bucket(perSecond: requestsPerSecond)
        deletes = Bucket(perSecond: deletesPerSecond)
    }

    /// Answers one request at wall time `now` (seconds since 1970, fractional for the rate limits).
    public mutating func handle(_ request: StandInRequest, now: Double) -> StandInResponse {
        guard let auth = request.authorization, auth.hasPrefix("Bearer "), auth.count > 7 else {
            return Self.error(400, "authorization-header-error", request.authorization == nil ? "missing Authorization header" : "bad Authorization header format")
        }
        guard String(auth.dropFirst(7)) == apiKey else { return StandInResponse(status: 401, body: .object(["error": .string("authentication-error")])) }
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let isDelete = request.method == "DELETE" && parts.first == "rooms"
        guard general.take(now: now), !isDelete || deletes.take(now: now) else {
            return Self.error(429, "rate-limit-error", "too many requests; please throttle your request rate")
        }
        let seconds = Int64(now)
        switch (request.method, parts.count, parts.first) {
        case ("POST", 1, "rooms"): return createRoom(request.body, now: seconds)
        case ("GET", 2, "rooms"): return live(parts[1], now: seconds).map { StandInResponse(status: 200, body: view($0)) } ?? Self.roomNotFound(parts[1])
        case ("POST", 2, "rooms"): return updateRoom(parts[1], request.body, now: seconds)
        case ("DELETE", 2, "rooms"): return deleteRoom(parts[1], now: seconds)
        case ("POST", 1, "meeting-tokens"): return createToken(request.body, now: seconds)
        case ("GET", 2, "meeting-tokens"): return validateToken(parts[1], now: seconds)
        default: return Self.error(404, "not-found", "no such endpoint: \(request.method) /v1\(request.path)")
        }
    }

    // MARK: Rooms

    private mutating func createRoom(_ body: [UInt8], now: Int64) -> StandInResponse {
        let json: JSON
        switch Self.object(body) {
        case .failure(let response): return response
        case .success(let parsed): json = parsed
        }
        if let unknown = json.keys.first(where: { !["name", "privacy", "properties"].contains($0) }) {
            return Self.invalid("unknown parameter '\(unknown)'")
        }
        let name: String
        if let given = json["name"] {
            guard let text = given.stringValue else { return Self.invalid("name must be a string") }
            name = text
        } else {
            name = Self.randomName()
        }
        guard !name.isEmpty, name.utf8.allSatisfy(Self.isRoomNameByte) else {
            return Self.invalid("\(name) contains invalid characters (room names can contain A-Z, a-z, 0-9, '-', and '_')")
        }
        guard name.utf8.count <= Self.maxRoomName else { return Self.invalid("room name cannot exceed \(Self.maxRoomName) characters") }
        let privacy = json["privacy"]?.stringValue ?? "public"
        guard json["privacy"] == nil || json["privacy"]?.stringValue != nil, ["public", "private"].contains(privacy) else {
            return Self.invalid("privacy must be one of 'public', 'private'")
        }
        var room = Room(id: UUID().uuidString.lowercased(), name: name, privacy: privacy, createdAt: now)
        if let refused = Self.apply(json["properties"], to: &room, now: now) { return refused }
        guard live(name, now: now) == nil else { return Self.invalid("a room named \(name) already exists") }
        rooms[name] = room
        return StandInResponse(status: 200, body: view(room))
    }

    /// Daily's "set room config": new properties for a live room.
    private mutating func updateRoom(_ name: String, _ body: [UInt8], now: Int64) -> StandInResponse {
        guard var room = live(name, now: now) else { return Self.roomNotFound(name) }
        let json: JSON
        switch Self.object(body) {
        case .failure(let response): return response
        case .success(let parsed): json = parsed
        }
        if let unknown = json.keys.first(where: { !["privacy", "properties"].contains($0) }) { return Self.invalid("unknown parameter '\(unknown)'") }
        if let privacy = json["privacy"] {
            guard let text = privacy.stringValue, ["public", "private"].contains(text) else { return Self.invalid("privacy must be one of 'public', 'private'") }
            room.privacy = text
        }
        if let refused = Self.apply(json["properties"], to: &room, now: now) { return refused }
        rooms[name] = room
        return StandInResponse(status: 200, body: view(room))
    }

    /// Sets a room's properties from a request's `properties`; the error answer when one is refused.
    private static func apply(_ properties: JSON?, to room: inout Room, now: Int64) -> StandInResponse? {
        guard let properties else { return nil }
        guard case .object(let members) = properties else { return invalid("properties must be an object") }
        for (key, value) in members {
            switch key {
            case "exp", "nbf":
                guard let t = value.intValue else { return invalid("\(key) was '\(text(value))' but should be a number of seconds since the unix epoch") }
                if key == "exp" {
                    guard t > now else { return invalid("exp was '\(t)', which is in the past rather than in the future") }
                    room.exp = Int64(t)
                } else {
                    room.nbf = Int64(t)
                }
            case "max_participants":
                guard let n = value.intValue, (1...defaultMaxParticipants).contains(n) else {
                    return invalid("max_participants must be an integer from 1 to \(defaultMaxParticipants)")
                }
                room.maxParticipants = n
            default:
                return invalid("unknown parameter '\(key)'")
            }
        }
        return nil
    }

    private mutating func deleteRoom(_ name: String, now: Int64) -> StandInResponse {
        guard let room = rooms.removeValue(forKey: name) else { return Self.roomNotFound(name) }
        if let exp = room.exp, exp <= now {
            return StandInResponse(
                status: 404, body: .object(["error": .string("not-found"), "info": .string("room \(name) not found"), "deleted": .bool(true)]))
        }
        return StandInResponse(status: 200, body: .object(["deleted": .bool(true), "name": .string(name)]))
    }

    /// Names of the rooms that exist and have not expired.
    public func liveRooms(now: Int64) -> [String] {
        rooms.keys.filter { live($0, now: now) != nil }.sorted()
    }

    /// A room that exists and has not expired. Expired rooms are kept, so that deleting one can say so,
    /// but everything else treats them as deleted.
    private func live(_ name: String, now: Int64) -> Room? {
        guard let room = rooms[name], room.exp.map({ $0 > now }) ?? true else { return nil }
        return room
    }

    private func view(_ room: Room) -> JSON {
        var config: [String: JSON] = [:]
        if let exp = room.exp { config["exp"] = .number(Double(exp)) }
        if let nbf = room.nbf { config["nbf"] = .number(Double(nbf)) }
        if let n = room.maxParticipants { config["max_participants"] = .number(Double(n)) }
        return .object([
            "id": .string(room.id), "name": .string(room.name), "api_created": .bool(true), "privacy": .string(room.privacy),
            "url": .string("\(roomURLBase)/\(room.name)"), "created_at": .string(Self.iso8601(room.createdAt)), "config": .object(config),
        ])
    }

    // MARK: Meeting tokens

    private func createToken(_ body: [UInt8], now: Int64) -> StandInResponse {
        let json: JSON
        switch Self.object(body) {
        case .failure(let response): return response
        case .success(let parsed): json = parsed
        }
        if let unknown = json.keys.first(where: { $0 != "properties" }) { return Self.invalid("unknown parameter '\(unknown)'") }
        guard case .object(let properties)? = json["properties"] else { return Self.invalid("properties must be an object") }
        var claims: [String: JSON] = ["d": .string(domainID), "iat": .number(Double(now))]
        for (key, value) in properties {
            switch key {
            case "room_name":
                guard let name = value.stringValue, !name.isEmpty, name.utf8.allSatisfy(Self.isRoomNameByte) else {
                    return Self.invalid("room_name must be a valid room name")
                }
                claims["r"] = value
            case "user_id":
                guard let id = value.stringValue, !id.isEmpty, id.count <= Self.maxUserID else {
                    return Self.invalid("user_id must be a string of at most \(Self.maxUserID) characters")
                }
                claims["ud"] = value
            case "user_name":
                guard value.stringValue != nil else { return Self.invalid("user_name must be a string") }
                claims["u"] = value
            case "is_owner":
                guard case .bool = value else { return Self.invalid("is_owner must be a boolean") }
                claims["o"] = value
            case "exp", "nbf":
                guard let t = value.intValue else { return Self.invalid("\(key) was '\(Self.text(value))' but should be a number of seconds since the unix epoch") }
                if key == "exp", t <= now { return Self.invalid("exp was '\(t)', which is in the past rather than in the future") }
                claims[key] = value
            default:
                return Self.invalid("unknown parameter '\(key)'")
            }
        }
        return StandInResponse(status: 200, body: .object(["token": .string(jwt.sign(payload: JSON.object(claims).encoded))]))
    }

    private func validateToken(_ token: String, now: Int64) -> StandInResponse {
        guard let claims = try? jwt.verify(token), claims["d"]?.stringValue == domainID else {
            return Self.invalid("token is not valid for this domain")
        }
        if let exp = claims["exp"]?.intValue, Int64(exp) <= now { return Self.invalid("token has expired") }
        if let nbf = claims["nbf"]?.intValue, Int64(nbf) > now { return Self.invalid("token is not valid yet") }
        let names = ["r": "room_name", "ud": "user_id", "u": "user_name", "o": "is_owner", "exp": "exp", "nbf": "nbf"]
        var properties: [String: JSON] = [:]
        for (short, long) in names { if let v = claims[short] { properties[long] = v } }
        if properties["is_owner"] == nil { properties["is_owner"] = .bool(false) }
        return StandInResponse(status: 200, body: .object(properties))
    }

    // MARK: Helpers

    static func isRoomNameByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
    }

    static func error(_ status: Int, _ type: String, _ info: String) -> StandInResponse {
        StandInResponse(status: status, body: .object(["error": .string(type), "info": .string(info)]))
    }

    static func invalid(_ info: String) -> StandInResponse { error(400, "invalid-request-error", info) }

    static func roomNotFound(_ name: String) -> StandInResponse { error(404, "not-found", "room \(name) not found") }

    static func object(_ body: [UInt8]) -> Result<JSON, StandInResponse> {
        if body.isEmpty { return .success(.object([:])) }
        guard let json = try? JSONParser.parse(body), json.isObject else {
            return .failure(error(400, "json-parsing-error", "the request body is not a JSON object"))
        }
        return .success(json)
    }

    static func text(_ value: JSON) -> String {
        value.stringValue ?? String(decoding: value.encoded, as: UTF8.self)
    }

    static func randomName() -> String {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
        return String(decoding: (0..<20).map { _ in alphabet[Int(rng.next(upperBound: UInt8(alphabet.count)))] }, as: UTF8.self)
    }

    static func iso8601(_ seconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }

    /// A token bucket that refuses rather than queues, as the service does.
    struct Bucket: Sendable {
        let perSecond: Double
        var tokens: Double
        var at: Double = 0

        init(perSecond: Double) {
            self.perSecond = perSecond
            tokens = perSecond
        }

        mutating func take(now: Double) -> Bool {
            tokens = min(max(perSecond, 1), tokens + max(0, now - at) * perSecond)
            at = max(at, now)
            guard tokens >= 1 else { return false }
            tokens -= 1
            return true
        }
    }
}

extension JSON {
    var keys: [String] {
        if case .object(let members) = self { return members.keys.sorted() }
        return []
    }
}
