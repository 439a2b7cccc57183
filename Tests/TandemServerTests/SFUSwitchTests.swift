import Foundation
import TandemArbiter
import TandemDailyStandIn
import TandemProtocol
import TandemSFU
import TandemStore
import Testing

@testable import TandemServer

/// The SFU provider in a running server, against the Daily stand-in: every participant moves together
/// to one room with a token of its own, and a failing service leaves the session where it works.
@Suite("Switching to the SFU in a running server")
struct SFUSwitchTests {
    static let apiKey = "daily-key"
    static let bad = #"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":600,"lossPct":1,"jitterMs":5}"#

    static func config(_ base: String, prepare: SFUPreparation = .qualityTrend, roomTTL: Duration = .seconds(3600)) -> ServerConfig {
        TestServer.config { c in
            var sfu = SFUSettings(api: DailyConfiguration(baseURL: base, apiKey: apiKey))
            sfu.roomTTL = roomTTL
            sfu.api.retry.base = .milliseconds(5)
            sfu.api.retry.cap = .milliseconds(40)
            c.sfu = sfu
            c.arbiter.enabled = [.p2p, .sfu]
            c.arbiter.sfuPreparation = prepare
        }
    }

    func validate(_ standIn: DailyStandIn, _ token: String) async -> StandInResponse {
        await standIn.respond(StandInRequest(method: "GET", path: "/meeting-tokens/\(token)", authorization: "Bearer \(Self.apiKey)"))
    }

    func eventually(_ what: String, within seconds: Double = 10, _ condition: @escaping @Sendable () async -> Bool) async throws {
        try await within(seconds, what) {
            while await !condition() { try await Task.sleep(for: .milliseconds(20)) }
        }
    }

    /// One `provider` message reached the client and nothing else moved it: a ping's pong comes next.
    func onlyProvider(_ client: WSTestClient) async throws -> JSON {
        let provider = try await client.next("provider")
        client.send(#"{"type":"ping","t":7}"#)
        while let m = try await client.nextAny() {
            if m["type"] == .string("pong") { break }
            #expect(m["type"] != .string("provider"), "a second provider message")
        }
        return provider
    }

    @Test(arguments: [SFUPreparation.qualityTrend, .onDemand, .sessionStart])
    func sustainedBadQualityMovesEveryoneToOneRoomWithTokensOfTheirOwn(_ prepare: SFUPreparation) async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: prepare)) { server in
                let (a, wa) = try await server.join("s1")
                let (b, wb) = try await server.join("s1")
                #expect(wa["provider"]?["name"] == .string("p2p") && wb["provider"]?["sfu"] == nil)
                for _ in 0..<3 { a.send(Self.bad) }
                let pa = try await onlyProvider(a)
                let pb = try await onlyProvider(b)
                for (p, welcome) in [(pa, wa), (pb, wb)] {
                    #expect(p["name"] == .string("sfu") && p["epoch"] == .number(2) && p["reason"] == .string("quality"))
                    #expect(p["sfu"]?["provider"] == .string("daily") && p["sfu"]?["url"]?.stringValue?.hasSuffix("/rooms/s1") == true)
                    guard let token = p["sfu"]?["token"]?.stringValue else { Issue.record("no token"); continue }
                    let claims = await validate(standIn, token)
                    #expect(claims.status == 200 && claims.body["room_name"] == .string("s1"))
                    #expect(claims.body["user_id"] == welcome["participant"] && claims.body["is_owner"] == .bool(false))
                }
                #expect(pa["sfu"]?["token"] != pb["sfu"]?["token"])
                #expect(standIn.liveRooms == ["s1"])
                #expect(standIn.requestCounts["POST /rooms"] == 1 && standIn.requestCounts["POST /meeting-tokens"] == 2)
                a.send(#"{"type":"leave"}"#)
                b.send(#"{"type":"leave"}"#)
                // The session ended: its room goes.
                try await eventually("the room's delete") { standIn.liveRooms.isEmpty }
            }
        }
    }

    @Test func aRoomMadeAtSessionStartMeansTheSwitchCallsNothing() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: .sessionStart)) { server in
                let (a, _) = try await server.join("s2")
                let (b, _) = try await server.join("s2")
                // Ready: the room and both tokens exist before any report.
                try await eventually("two tokens") { standIn.requestCounts["POST /meeting-tokens"] == 2 }
                let before = standIn.requestCounts
                for _ in 0..<3 { a.send(Self.bad) }
                _ = try await b.next("provider")
                #expect(standIn.requestCounts == before)
            }
        }
    }

    @Test func aThirdJoinerMovesAP2PSessionToTheSFU() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                let (a, _) = try await server.join("s3")
                let (b, _) = try await server.join("s3")
                let (_, wc) = try await server.join("s3")
                #expect(wc["provider"]?["name"] == .string("sfu") && wc["provider"]?["epoch"] == .number(2))
                var tokens: Set<String> = []
                if let t = wc["provider"]?["sfu"]?["token"]?.stringValue { tokens.insert(t) }
                for client in [a, b] {
                    let p = try await client.next("provider")
                    #expect(p["name"] == .string("sfu") && p["epoch"] == .number(2) && p["reason"] == .string("join"))
                    if let t = p["sfu"]?["token"]?.stringValue { tokens.insert(t) }
                }
                #expect(tokens.count == 3)
                for token in tokens { #expect(await validate(standIn, token).body["room_name"] == .string("s3")) }
            }
        }
    }

    @Test func aFailingServiceLeavesTheSessionOnAWorkingProviderWithAnAlert() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            standIn.setFaults(StandInFaults(failNext: 1000, failStatus: 500))
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                let (a, wa) = try await server.join("s4")
                let (b, wb) = try await server.join("s4")
                for _ in 0..<3 { a.send(Self.bad) }
                for client in [a, b] {
                    var alert = try await client.next("alert")
                    while alert["kind"] == .string("high_latency") { alert = try await client.next("alert") }
                    #expect(alert["kind"] == .string("sfu_unavailable") && alert["value"] == .number(500))
                    #expect(alert["participant"] == wa["participant"])
                    #expect(alert["detail"]?.stringValue?.contains("server-error") == true)
                }
                // Still on p2p at epoch 1: a signal for it goes through, and no provider message came.
                a.send(#"{"type":"signal","to":"\#(wb["participant"]?.stringValue ?? "")","data":{"kind":"offer","sdp":"v=0","epoch":1}}"#)
                let signal = try await b.next("signal")
                #expect(signal["data"]?["kind"] == .string("offer"))
                let snapshot = await server.hub.snapshot(SessionID("s4")!)
                #expect(snapshot?.provider == .p2p && snapshot?.epoch == 1)
                #expect(standIn.liveRooms.isEmpty)
            }
        }
    }

    @Test func aJoinerTheServiceCannotAdmitIsRefusedAndTheOthersCarryOn() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            standIn.setFaults(StandInFaults(failNext: 1000, failStatus: 503))
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                _ = try await server.join("s5")
                _ = try await server.join("s5")
                let c = try await server.connect()
                c.send(#"{"type":"join","session":"s5"}"#)
                let error = try await c.next("error")
                #expect(error["code"] == .string("provider_unavailable") && error["message"]?.stringValue?.contains("503") == true)
                let snapshot = await server.hub.snapshot(SessionID("s5")!)
                #expect(snapshot?.provider == .p2p && snapshot?.participants.count == 2)
            }
        }
    }

    /// A slow service, so that a preparation takes seconds (two calls in a row: the room, then tokens).
    static let slow = StandInFaults(latency: .seconds(2))

    @Test func aJoinWaitingForTheServiceHoldsUpNothingElseInItsSession() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                let (a, _) = try await server.join("s10")
                let (b, _) = try await server.join("s10")
                standIn.setFaults(Self.slow)
                let c = try await server.connect()
                c.send(#"{"type":"join","session":"s10"}"#)
                try await eventually("the room's request") { standIn.requestCounts["POST /rooms"] == 1 }
                // The room's task answers others while the third joiner's room and token are made.
                a.send(#"{"type":"ping","t":1}"#)
                #expect(try await a.next("pong")["t"] == .number(1))
                let waiting = await server.hub.snapshot(SessionID("s10")!)
                #expect(waiting?.participants.count == 2 && waiting?.provider == .p2p)
                #expect(standIn.requestCounts["POST /meeting-tokens"] == nil)
                let welcome = try await c.next("welcome")
                #expect(welcome["provider"]?["name"] == .string("sfu") && welcome["provider"]?["sfu"]?["token"] != nil)
                for client in [a, b] { #expect(try await client.next("provider")["name"] == .string("sfu")) }
            }
        }
    }

    @Test func joinsBehindOneWaitingForTheServiceAreAdmittedInTurn() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            standIn.setFaults(Self.slow)
            var config = Self.config(base, prepare: .onDemand)
            config.arbiter.enabled = [.sfu]
            try await TestServer.with(config) { server in
                let a = try await server.connect()
                a.send(#"{"type":"join","session":"s11","name":"first"}"#)
                try await eventually("the room's request") { standIn.requestCounts["POST /rooms"] == 1 }
                let b = try await server.connect()
                b.send(#"{"type":"join","session":"s11","name":"second"}"#)
                let wa = try await a.next("welcome")
                let wb = try await b.next("welcome")
                #expect(wa["peers"] == .array([]))
                guard case .array(let peers) = wb["peers"] else { Issue.record("no peers"); return }
                #expect(peers.map { $0["name"] } == [.string("first")])
                #expect(try await a.next("peer-joined")["peer"]?["name"] == .string("second"))
                for welcome in [wa, wb] {
                    #expect(welcome["provider"]?["name"] == .string("sfu") && welcome["provider"]?["epoch"] == .number(1))
                }
                #expect(wa["provider"]?["sfu"]?["token"] != nil && wa["provider"]?["sfu"]?["token"] != wb["provider"]?["sfu"]?["token"])
                #expect(standIn.requestCounts["POST /rooms"] == 1)
            }
        }
    }

    @Test func aJoinWaitingForTheServiceInASessionThatEndsJoinsTheNextOne() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                let (a, _) = try await server.join("s12")
                let (b, _) = try await server.join("s12")
                standIn.setFaults(Self.slow)
                let c = try await server.connect()
                c.send(#"{"type":"join","session":"s12"}"#)
                try await eventually("the room's request") { standIn.requestCounts["POST /rooms"] == 1 }
                for client in [a, b] {
                    client.send(#"{"type":"leave"}"#)
                    _ = try await client.closeCode()
                }
                // The session ended under the waiting join: it starts the next one, as its first joiner.
                let welcome = try await c.next("welcome")
                #expect(welcome["peers"] == .array([]) && welcome["provider"]?["name"] == .string("p2p"))
                #expect(try await server.metric("tandem_sessions") == 1)
            }
        }
    }

    @Test func anOperatorsSwitchWaitingForTheServiceHoldsUpNothingElse() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                let (a, _) = try await server.join("s13")
                let (b, _) = try await server.join("s13")
                standIn.setFaults(Self.slow)
                let switched = Task { await server.hub.forceSwitch(SessionID("s13")!, to: .sfu) }
                try await eventually("the room's request") { standIn.requestCounts["POST /rooms"] == 1 }
                a.send(#"{"type":"ping","t":2}"#)
                #expect(try await a.next("pong")["t"] == .number(2))
                #expect(await server.hub.snapshot(SessionID("s13")!)?.provider == .p2p)
                let result = await switched.value
                #expect((try? result.get())?.name == .sfu && (try? result.get())?.epoch == 2)
                for client in [a, b] { #expect(try await client.next("provider")["reason"] == .string("admin")) }
            }
        }
    }

    @Test func aRoomWhoseDeleteFailedIsDeletedByTheCleanupJob() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            try await TestServer.with(Self.config(base, prepare: .sessionStart)) { server in
                let (a, _) = try await server.join("s6")
                try await eventually("the room") { standIn.liveRooms == ["s6"] && standIn.requestCounts["POST /meeting-tokens"] == 1 }
                // Every try of the delete fails.
                standIn.setFaults(StandInFaults(failNext: RetryPolicy().serverErrorTries, failStatus: 502))
                a.send(#"{"type":"leave"}"#)
                try await eventually("the failed delete") { standIn.requestCounts["DELETE /rooms/:name"] == RetryPolicy().serverErrorTries }
                #expect(standIn.liveRooms == ["s6"])
                try await eventually("the delete to be given up") { await server.hub.sfuRooms?.failedDeletes == 1 }
                await server.hub.cleanup()
                try await eventually("the retried delete") { standIn.liveRooms.isEmpty }
            }
        }
    }

    @Test func aJoinerThatFindsTheServiceFailingEndsAWaitingSwitchWithAnAlert() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            standIn.setFaults(StandInFaults(latency: .milliseconds(200), failNext: 1000, failStatus: 500))
            try await TestServer.with(Self.config(base, prepare: .onDemand)) { server in
                let (a, wa) = try await server.join("s7")
                let (b, _) = try await server.join("s7")
                for _ in 0..<3 { a.send(Self.bad) }
                // The room has handled the reports (its pong comes after them): the switch waits for a room
                // the service will not make, and a third joiner arrives meanwhile.
                a.send(#"{"type":"ping","t":3}"#)
                _ = try await a.next("pong")
                let c = try await server.connect()
                c.send(#"{"type":"join","session":"s7"}"#)
                #expect(try await c.next("error")["code"] == .string("provider_unavailable"))
                for client in [a, b] {
                    var alert = try await client.next("alert")
                    while alert["kind"] == .string("high_latency") { alert = try await client.next("alert") }
                    #expect(alert["kind"] == .string("sfu_unavailable") && alert["participant"] == wa["participant"])
                }
                let snapshot = await server.hub.snapshot(SessionID("s7")!)
                #expect(snapshot?.provider == .p2p && snapshot?.epoch == 1 && snapshot?.participants.count == 2)
            }
        }
    }

    @Test func aSessionThatStartsAgainKeepsItsRoomFromTheOldSessionsDelete() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            // A slow service: the first session ends while its room is still being made, and the new
            // session starts before that ends (1.5 s leaves room for a loaded machine: at 300 ms the
            // delete was sometimes sent before the new session could call it off).
            standIn.setFaults(StandInFaults(latency: .milliseconds(1500)))
            try await TestServer.with(Self.config(base, prepare: .sessionStart)) { server in
                let (a, _) = try await server.join("s8")
                a.send(#"{"type":"leave"}"#)
                _ = try await a.closeCode()
                let (b, wb) = try await server.join("s8")
                let (c, _) = try await server.join("s8")
                try await eventually("the new session's tokens") { standIn.requestCounts["POST /meeting-tokens", default: 0] >= 3 }
                // Epochs never go back: the new session is at the next one.
                let epoch = wb["provider"]?["epoch"]?.intValue ?? 0
                for _ in 0..<3 { b.send(Self.bad.replacingOccurrences(of: #""epoch":1"#, with: #""epoch":\#(epoch)"#)) }
                let moved = try await c.next("provider")
                #expect(moved["name"] == .string("sfu"))
                // The old session's delete was called off: the room the new one uses is still there.
                #expect(standIn.requestCounts["DELETE /rooms/:name"] == nil)
                #expect(standIn.liveRooms == ["s8"])
            }
        }
    }

    @Test func aRoomNearItsEndIsExtendedAndItsTokensMadeAgain() async throws {
        try await DailyStandIn.withRunning(apiKey: Self.apiKey) { standIn, base in
            // Rooms that live 20 s: after about 15 s the session's room is in its last quarter, and 5 s are
            // left for the extension on a machine busy with the other tests.
            try await TestServer.with(Self.config(base, prepare: .sessionStart, roomTTL: .seconds(20))) { server in
                let (a, _) = try await server.join("s9")
                let (b, _) = try await server.join("s9")
                // Both stay alive past the heartbeat timeout.
                let keepAlive = Task {
                    while !Task.isCancelled {
                        for c in [a, b] { c.send(#"{"type":"ping","t":0}"#) }
                        try? await Task.sleep(for: .seconds(2))
                    }
                }
                defer { keepAlive.cancel() }
                try await eventually("the first tokens") { standIn.requestCounts["POST /meeting-tokens"] == 2 }
                let first = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/s9", authorization: "Bearer \(Self.apiKey)"))
                // The once-a-second tick finds the room in its last quarter.
                try await eventually("the room's extension", within: 40) { standIn.requestCounts["POST /meeting-tokens"] == 4 }
                let extended = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/s9", authorization: "Bearer \(Self.apiKey)"))
                #expect(standIn.requestCounts["POST /rooms/:name"] == 1)
                #expect((extended.body["config"]?["exp"]?.intValue ?? 0) > (first.body["config"]?["exp"]?.intValue ?? .max))
                #expect(extended.body["id"] == first.body["id"])
                for _ in 0..<3 { a.send(Self.bad) }
                let moved = try await b.next("provider")
                guard let token = moved["sfu"]?["token"]?.stringValue else { Issue.record("no token"); return }
                #expect(await validate(standIn, token).body["exp"] == extended.body["config"]?["exp"])
            }
        }
    }
}
