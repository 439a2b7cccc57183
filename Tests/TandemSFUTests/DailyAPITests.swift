import TandemDailyStandIn
import TandemJWT
import TandemProtocol
import Testing

/// The stand-in's API as a table: request in, Daily's documented answer out.
@Suite("Daily stand-in: validation and error shapes")
struct DailyAPITests {
    static let now = 1_800_000_000.0

    func api(_ perSecond: Double = 1000) -> DailyAPI {
        DailyAPI(apiKey: "k", roomURLBase: "http://standin/rooms", requestsPerSecond: perSecond, deletesPerSecond: 2)
    }

    func post(_ path: String, _ body: String, auth: String? = "Bearer k") -> StandInRequest {
        StandInRequest(method: "POST", path: path, authorization: auth, body: Array(body.utf8))
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var request: StandInRequest
        var status: Int
        var error: String?
        var info: String?
        var testDescription: String { "\(request.method) \(request.path) \(String(decoding: request.body, as: UTF8.self)) → \(status)" }
    }

    static let long = String(repeating: "a", count: 129)
    static let cases: [Case] = [
        Case(request: StandInRequest(method: "GET", path: "/rooms/x", authorization: nil), status: 400, error: "authorization-header-error"),
        Case(request: StandInRequest(method: "GET", path: "/rooms/x", authorization: "Basic k"), status: 400, error: "authorization-header-error"),
        Case(request: StandInRequest(method: "GET", path: "/rooms/x", authorization: "Bearer other"), status: 401, error: "authentication-error"),
        Case(request: StandInRequest(method: "GET", path: "/rooms/x", authorization: "Bearer k"), status: 404, error: "not-found", info: "room x not found"),
        Case(request: StandInRequest(method: "DELETE", path: "/rooms/x", authorization: "Bearer k"), status: 404, error: "not-found"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array("{".utf8)), status: 400, error: "json-parsing-error"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array(#"{"name":"a b"}"#.utf8)), status: 400,
             error: "invalid-request-error", info: "a b contains invalid characters (room names can contain A-Z, a-z, 0-9, '-', and '_')"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array(#"{"name":"\#(long)"}"#.utf8)), status: 400,
             error: "invalid-request-error", info: "room name cannot exceed 128 characters"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array(#"{"privacy":"secret"}"#.utf8)), status: 400,
             error: "invalid-request-error"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array(#"{"properties":{"colour":1}}"#.utf8)), status: 400,
             error: "invalid-request-error", info: "unknown parameter 'colour'"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array(#"{"properties":{"exp":"soon"}}"#.utf8)), status: 400,
             error: "invalid-request-error", info: "exp was 'soon' but should be a number of seconds since the unix epoch"),
        Case(request: StandInRequest(method: "POST", path: "/rooms", authorization: "Bearer k", body: Array(#"{"properties":{"max_participants":201}}"#.utf8)), status: 400,
             error: "invalid-request-error"),
        Case(request: StandInRequest(method: "POST", path: "/meeting-tokens", authorization: "Bearer k",
                                     body: Array(#"{"properties":{"room_name":"r","user_id":"\#(String(repeating: "u", count: 37))"}}"#.utf8)), status: 400,
             error: "invalid-request-error"),
        Case(request: StandInRequest(method: "POST", path: "/meeting-tokens", authorization: "Bearer k", body: Array(#"{"properties":{"exp":1}}"#.utf8)), status: 400,
             error: "invalid-request-error", info: "exp was '1', which is in the past rather than in the future"),
        Case(request: StandInRequest(method: "GET", path: "/meeting-tokens/abc", authorization: "Bearer k"), status: 400, error: "invalid-request-error"),
        Case(request: StandInRequest(method: "PUT", path: "/rooms", authorization: "Bearer k"), status: 404, error: "not-found"),
    ]

    @Test(arguments: cases)
    func answers(_ c: Case) {
        var a = api()
        let response = a.handle(c.request, now: Self.now)
        #expect(response.status == c.status)
        #expect(response.body["error"]?.stringValue == c.error)
        if let info = c.info { #expect(response.body["info"]?.stringValue == info) }
        #expect(a.rooms.isEmpty)
    }

    @Test func defaultsAndTheRoomObject() {
        var a = api()
        let made = a.handle(post("/rooms", "{}"), now: Self.now)
        #expect(made.status == 200)
        guard let name = made.body["name"]?.stringValue else { Issue.record(); return }
        #expect(name.count == 20 && made.body["privacy"] == .string("public") && made.body["api_created"] == .bool(true))
        #expect(made.body["url"] == .string("http://standin/rooms/\(name)") && made.body["config"] == .object([:]))
        #expect(made.body["created_at"] == .string("2027-01-15T08:00:00.000Z"))
    }

    @Test func tokensAreHS256WithDailysClaimsAndValidateOnlyForTheirDomain() throws {
        var a = api()
        let answer = a.handle(post("/meeting-tokens", #"{"properties":{"room_name":"r1","user_id":"p1","is_owner":false,"exp":1800000600}}"#), now: Self.now)
        guard let token = answer.body["token"]?.stringValue else { Issue.record(); return }
        let claims = try HS256JWT(secret: "k").verify(token)
        #expect(claims["r"] == .string("r1") && claims["ud"] == .string("p1") && claims["o"] == .bool(false))
        #expect(claims["d"] == .string(a.domainID) && claims["exp"] == .number(1_800_000_600))
        let valid = a.handle(StandInRequest(method: "GET", path: "/meeting-tokens/\(token)", authorization: "Bearer k"), now: Self.now)
        #expect(valid.body == .object(["room_name": .string("r1"), "user_id": .string("p1"), "is_owner": .bool(false), "exp": .number(1_800_000_600)]))
        // Expired, or from another domain with the same key: not valid.
        let expired = a.handle(StandInRequest(method: "GET", path: "/meeting-tokens/\(token)", authorization: "Bearer k"), now: Self.now + 601)
        #expect(expired.status == 400)
        var other = api()
        #expect(other.handle(StandInRequest(method: "GET", path: "/meeting-tokens/\(token)", authorization: "Bearer k"), now: Self.now).status == 400)
    }

    @Test func rateLimitsAnswer429AndDeletesHaveTheirOwn() {
        var a = api(20)
        let statuses = (0..<21).map { _ in a.handle(StandInRequest(method: "GET", path: "/rooms/x", authorization: "Bearer k"), now: Self.now).status }
        #expect(statuses.prefix(20).allSatisfy { $0 == 404 } && statuses.last == 429)
        let limited = a.handle(StandInRequest(method: "GET", path: "/rooms/x", authorization: "Bearer k"), now: Self.now)
        #expect(limited.body["error"] == .string("rate-limit-error"))
        var b = api()
        let deletes = (0..<3).map { _ in b.handle(StandInRequest(method: "DELETE", path: "/rooms/x", authorization: "Bearer k"), now: Self.now).status }
        #expect(deletes == [404, 404, 429])
        #expect(b.handle(StandInRequest(method: "DELETE", path: "/rooms/x", authorization: "Bearer k"), now: Self.now + 0.5).status == 404)
    }
}
