import Foundation
import TandemDailyStandIn
import TandemProtocol
import TandemSFU
import Testing

/// The Daily adapter against the stand-in over HTTP: every documented answer, error paths included.
@Suite("Daily adapter against the stand-in")
struct DailyClientTests {
    static let later = Int64(Date().timeIntervalSince1970) + 3600

    func validate(_ standIn: DailyStandIn, _ token: String) async -> StandInResponse {
        await standIn.respond(StandInRequest(method: "GET", path: "/meeting-tokens/\(token)", authorization: "Bearer key-1"))
    }

    @Test func aRoomAndTokensThatTheServiceAccepts() async throws {
        try await withStandIn { standIn, base in
            let daily = client(base)
            let room = try await daily.room(session: "s-1", maxParticipants: 16, expiresAt: Self.later)
            #expect(room.name == "s-1" && room.url.hasSuffix("/rooms/s-1") && room.expiresAt == Self.later)
            let got = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/s-1", authorization: "Bearer key-1"))
            #expect(got.body["privacy"] == .string("private"))
            #expect(got.body["config"]?["max_participants"] == .number(16))
            let a = try await daily.token(room: room, participant: "pa", expiresAt: Self.later)
            let b = try await daily.token(room: room, participant: "pb", expiresAt: Self.later)
            #expect(a != b)
            for (token, id) in [(a, "pa"), (b, "pb")] {
                let v = await validate(standIn, token)
                #expect(v.status == 200)
                #expect(v.body["room_name"] == .string("s-1") && v.body["user_id"] == .string(id) && v.body["is_owner"] == .bool(false))
            }
        }
    }

    @Test func anExistingRoomIsReusedNotDuplicated() async throws {
        try await withStandIn { standIn, base in
            let daily = client(base)
            let first = try await daily.room(session: "s2", maxParticipants: 16, expiresAt: Self.later)
            let again = try await daily.room(session: "s2", maxParticipants: 16, expiresAt: Self.later)
            #expect(first == again)
            #expect(standIn.liveRooms == ["s2"])
            #expect(standIn.requestCounts == ["POST /rooms": 2, "GET /rooms/:name": 1])
            // Reused for tokens that live longer: the room's exp is extended to match, same room.
            let longer = try await daily.room(session: "s2", maxParticipants: 16, expiresAt: Self.later + 600)
            #expect(longer.name == "s2" && longer.expiresAt == Self.later + 600)
            #expect(standIn.requestCounts["POST /rooms/:name"] == 1 && standIn.liveRooms == ["s2"])
        }
    }

    /// A wrong key (401) and a missing one (Daily's 400 `authorization-header-error`) are both
    /// `unauthorized`, and neither is retried.
    @Test(arguments: [("wrong", 401, "authentication-error"), ("", 400, "authorization-header-error")])
    func aBadKeyIsUnauthorizedAndNotRetried(key: String, status: Int, type: String) async throws {
        try await withStandIn { standIn, base in
            do throws(SFUError) {
                _ = try await client(base, apiKey: key).room(session: "s3", maxParticipants: 2, expiresAt: Self.later)
                Issue.record("key \(key.debugDescription) made a room")
            } catch {
                #expect(error.code == .unauthorized && error.status == status && error.type == type)
            }
            #expect(standIn.requestCounts == ["POST /rooms": 1])
        }
    }

    @Test func aBadRequestIsFinal() async throws {
        try await withStandIn { standIn, base in
            // An exp in the past is Daily's 400 invalid-request-error; the room is not there either.
            do throws(SFUError) {
                _ = try await client(base).room(session: "s4", maxParticipants: 2, expiresAt: 1000)
                Issue.record("a room with an exp in the past")
            } catch {
                #expect(error.code == .badRequest && error.status == 400 && error.type == "invalid-request-error")
                #expect(error.info?.contains("in the past") == true)
            }
            #expect(standIn.requestCounts == ["POST /rooms": 1, "GET /rooms/:name": 1])
        }
    }

    @Test func serverErrorsAreRetriedToABound() async throws {
        try await withStandIn { standIn, base in
            standIn.setFaults(StandInFaults(failNext: 2, failStatus: 503))
            _ = try await client(base).room(session: "s5", maxParticipants: 2, expiresAt: Self.later)
            #expect(standIn.requestCounts["POST /rooms"] == 3)
            standIn.setFaults(StandInFaults(failNext: 10, failStatus: 500))
            do throws(SFUError) {
                _ = try await client(base).token(room: SFURoom(name: "s5", url: ""), participant: "p", expiresAt: Self.later)
                Issue.record("a token through ten 500s")
            } catch {
                #expect(error == SFUError(.unavailable, status: 500, type: "server-error", info: "injected failure"))
            }
            #expect(standIn.requestCounts["POST /meeting-tokens"] == RetryPolicy().serverErrorTries)
        }
    }

    @Test func rateLimitsAreRetriedWithBackoff() async throws {
        // The service allows 5 requests a second; the client, told it may send 1000, meets 429s.
        try await withStandIn(requestsPerSecond: 5) { standIn, base in
            let daily = client(base) { $0.retry.base = .milliseconds(100); $0.retry.cap = .seconds(1); $0.retry.rateLimitedTries = 8 }
            let room = try await daily.room(session: "s6", maxParticipants: 2, expiresAt: Self.later)
            // At once, so that they meet the limit however slowly the machine answers each of them.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<8 { group.addTask { _ = try await daily.token(room: room, participant: "p\(i)", expiresAt: Self.later) } }
                try await group.waitForAll()
            }
            let counts = standIn.requestCounts
            // Every call succeeded, and some of them only after a 429.
            #expect(counts["POST /meeting-tokens", default: 0] > 8)
        }
    }

    /// Calls that could not go within the request timeout are refused at once, not queued without end.
    @Test func aFullQueueIsRefusedAtOnce() async throws {
        try await withStandIn { _, base in
            let daily = client(base) {
                $0.requestsPerSecond = 1
                $0.requestTimeout = .milliseconds(1500)
            }
            let room = try await daily.room(session: "s7", maxParticipants: 2, expiresAt: Self.later)
            let outcomes = await withTaskGroup(of: SFUError?.self) { group in
                for i in 0..<6 {
                    group.addTask {
                        do throws(SFUError) {
                            _ = try await daily.token(room: room, participant: "p\(i)", expiresAt: Self.later)
                            return nil
                        } catch { return error }
                    }
                }
                return await group.reduce(into: [SFUError?]()) { $0.append($1) }
            }
            let refused = outcomes.compactMap { $0 }
            // One place a second, and no call may wait longer than 1.5 s: most of the six are refused.
            #expect(refused.count >= 3 && refused.count <= 5, "\(outcomes)")
            #expect(refused.allSatisfy { $0.code == .rateLimited && ($0.info ?? "").contains("waiting") })
        }
    }

    @Test func rateLimitedToTheEndIsAnError() async throws {
        try await withStandIn { standIn, base in
            standIn.setFaults(StandInFaults(failNext: 100, failStatus: 429))
            do throws(SFUError) {
                _ = try await client(base).room(session: "s7", maxParticipants: 2, expiresAt: Self.later)
                Issue.record("a room through 429s")
            } catch {
                #expect(error.code == .rateLimited && error.status == 429)
            }
            #expect(standIn.requestCounts["POST /rooms"] == RetryPolicy().rateLimitedTries)
        }
    }

    @Test func anExpiredRoomIsGoneAndMadeAnew() async throws {
        try await withStandIn { standIn, base in
            let daily = client(base)
            let now = Int64(standIn.now)
            _ = try await daily.room(session: "s8", maxParticipants: 2, expiresAt: now + 60)
            let before = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/s8", authorization: "Bearer key-1"))
            standIn.advanceClock(by: 120)
            let expired = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/s8", authorization: "Bearer key-1"))
            #expect(expired.status == 404 && expired.body["error"] == .string("not-found"))
            // Deleting it answers 404 with deleted: true, which the adapter takes as done.
            let deleted = await standIn.respond(StandInRequest(method: "DELETE", path: "/rooms/s8", authorization: "Bearer key-1"))
            #expect(deleted.status == 404 && deleted.body["deleted"] == .bool(true))
            _ = try await daily.room(session: "s9", maxParticipants: 2, expiresAt: Int64(standIn.now) + 60)
            standIn.advanceClock(by: 120)
            try await daily.deleteRoom(named: "s9")
            // An expired room's name is free again: a new room, not the old one.
            let fresh = try await daily.room(session: "s8", maxParticipants: 2, expiresAt: Int64(standIn.now) + 3600)
            let after = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/s8", authorization: "Bearer key-1"))
            #expect(fresh.name == "s8" && after.body["id"] != before.body["id"])
        }
    }

    @Test func deletingARoomThatIsGoneIsNotAnError() async throws {
        try await withStandIn { standIn, base in
            let daily = client(base)
            _ = try await daily.room(session: "s10", maxParticipants: 2, expiresAt: Self.later)
            try await daily.deleteRoom(named: "s10")
            try await daily.deleteRoom(named: "s10")
            #expect(standIn.liveRooms.isEmpty)
            #expect(standIn.requestCounts["DELETE /rooms/:name"] == 2)
        }
    }

    @Test func aSlowServiceTimesOut() async throws {
        try await withStandIn { standIn, base in
            standIn.setFaults(StandInFaults(latency: .milliseconds(400)))
            do throws(SFUError) {
                _ = try await client(base) { $0.requestTimeout = .milliseconds(50) }.room(session: "s11", maxParticipants: 2, expiresAt: Self.later)
                Issue.record("an answer from a service slower than the timeout")
            } catch {
                #expect(error.code == .timeout)
            }
        }
    }

    @Test func noServiceIsATransportError() async throws {
        // Port 9 on loopback (discard), which no test machine serves. The HTTP client tries to connect
        // again until the request's deadline, so the deadline is short here.
        do throws(SFUError) {
            _ = try await client("http://127.0.0.1:9/v1") { $0.requestTimeout = .milliseconds(200) }.room(session: "s12", maxParticipants: 2, expiresAt: Self.later)
            Issue.record("a room from nowhere")
        } catch {
            #expect(error.code == .transport || error.code == .timeout)
        }
    }
}
