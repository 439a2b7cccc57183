import Foundation
import NIOSSL
import TandemArbiter
import TandemJWT
import TandemProtocol
import Testing

@testable import TandemServer

@Suite("Signaling over a real WebSocket")
struct SignalingTests {
    @Test func joinWelcomesAndIntroducesPeers() async throws {
        try await TestServer.with { server in
            let (a, wa) = try await server.join("s1", extra: #","name":"Ann""#)
            #expect(wa["seq"] == .number(1))
            #expect(wa["session"] == .string("s1"))
            #expect(wa["peers"] == .array([]))
            #expect(wa["provider"]?["name"] == .string("p2p"))
            #expect(wa["provider"]?["epoch"] == .number(1))
            #expect(wa["provider"]?["room"] == .string("s1"))
            #expect(wa["provider"]?["polite"] == .bool(false))
            #expect(wa["heartbeat"] == .object(["intervalMs": .number(5000), "timeoutMs": .number(15000)]))
            #expect(wa["server"]?["node"] == .string("test-node"))
            #expect(wa["resumeKey"]?.stringValue?.isEmpty == false)
            let (_, wb) = try await server.join("s1", extra: #","name":"Ben""#)
            #expect(wb["peers"] == .array([.object(["id": wa["participant"]!, "name": .string("Ann")])]))
            #expect(wb["provider"]?["epoch"] == .number(1))
            #expect(wb["provider"]?["polite"] == .bool(true))
            let joined = try await a.next("peer-joined")
            #expect(joined["seq"] == .number(2))
            #expect(joined["peer"] == .object(["id": wb["participant"]!, "name": .string("Ben")]))
        }
    }

    @Test func signalsAreRelayedVerbatimInOrderWithTheSenderStamped() async throws {
        try await TestServer.with { server in
            let (a, wa) = try await server.join()
            let (b, wb) = try await server.join()
            let bid = wb["participant"]!.stringValue!
            var sent: [String] = []
            for i in 0..<40 {
                let data = #"{"kind":"candidate","epoch":1,"candidate":{"candidate":"candidate:\#(i) 1 udp 1 127.0.0.1 \#(9000 + i) typ host","sdpMid":"0"},  "n" : \#(i).50}"#
                sent.append(data)
                a.send(#"{"type":"signal","to":"\#(bid)","from":"forged","data":\#(data)}"#)
            }
            for i in 0..<40 {
                let m = try await b.next("signal")
                #expect(m["from"] == wa["participant"])
                // The data object arrives exactly as written, spacing and number text included.
                #expect(m["data"] == (try JSONParser.parse(Array(sent[i].utf8))))
            }
        }
    }

    @Test func verbatimMeansBytes() async throws {
        try await TestServer.with { server in
            let (a, _) = try await server.join()
            let (b, wb) = try await server.join()
            let data = #"{"kind":"offer","epoch":1,"sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n","x":1.000e0}"#
            a.send(#"{"type":"signal","to":"\#(wb["participant"]!.stringValue!)","data":\#(data)}"#)
            let m = try await b.next("signal")
            #expect(m["data"]?["sdp"] == .string("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"))
            // Re-encoding would have turned 1.000e0 into 1; check the raw text survived.
            #expect(m["data"]?["x"] == .number(1))
        }
    }

    @Test func sessionsAreIsolated() async throws {
        try await TestServer.with { server in
            let (a, _) = try await server.join("one")
            let (_, wb) = try await server.join("one")
            let (c, wc) = try await server.join("two")
            // c cannot reach a member of another session, and a cannot reach c.
            c.send(#"{"type":"signal","to":"\#(wb["participant"]!.stringValue!)","data":{"kind":"restart","epoch":1}}"#)
            let e = try await c.next("error")
            #expect(e["code"] == .string("unknown_peer"))
            #expect(e["ref"] == .string("signal"))
            a.send(#"{"type":"signal","to":"\#(wc["participant"]!.stringValue!)","data":{"kind":"restart","epoch":1}}"#)
            #expect(try await a.next("error")["code"] == .string("unknown_peer"))
            // c saw nothing of session one.
            c.send(#"{"type":"ping","t":1}"#)
            let next = try await c.nextAny()
            #expect(next?["type"] == .string("pong"))
        }
    }

    @Test func staleEpochSignalsAreRefused() async throws {
        try await TestServer.with { server in
            let (a, _) = try await server.join()
            let (_, wb) = try await server.join()
            a.send(#"{"type":"signal","to":"\#(wb["participant"]!.stringValue!)","data":{"kind":"offer","epoch":0,"sdp":"x"}}"#)
            let e = try await a.next("error")
            #expect(e["code"] == .string("stale_epoch"))
        }
    }

    @Test func pingIsAnsweredWithTheSameT() async throws {
        try await TestServer.with { server in
            let (a, _) = try await server.join()
            a.send(#"{"type":"ping","t":1732262400123.5}"#)
            let pong = try await a.next("pong")
            #expect(pong["t"] == .number(1732262400123.5))
            #expect(pong["seq"] == .number(2))
        }
    }

    @Test func leaveTellsThePeerAndClosesNormally() async throws {
        try await TestServer.with { server in
            let (a, wa) = try await server.join()
            let (b, _) = try await server.join()
            _ = try await a.next("peer-joined")
            a.send(#"{"type":"leave"}"#)
            let left = try await b.next("peer-left")
            #expect(left["peer"] == wa["participant"])
            #expect(left["reason"] == .string("left"))
            #expect(try await a.closeCode().code == 1000)
        }
    }

    @Test func thirdJoinerWithoutAnSFUGetsSessionFull() async throws {
        try await TestServer.with { server in
            _ = try await server.join()
            _ = try await server.join()
            let c = try await server.connect()
            c.send(#"{"type":"join","session":"s1"}"#)
            let e = try await c.next("error")
            #expect(e["code"] == .string("session_full"))
            #expect(e["seq"] == .number(0))
        }
    }

    @Test func healthFeedsQualityAndAlertsToEveryone() async throws {
        try await TestServer.with { server in
            let (a, wa) = try await server.join()
            let (b, _) = try await server.join()
            a.send(#"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":350,"lossPct":0,"jitterMs":5,"bitrateKbps":250}"#)
            let quality = try await b.next("quality")
            #expect(quality["participant"] == wa["participant"])
            let score = QualityScore.score(rttMs: 350, lossPct: 0, jitterMs: 5)
            #expect(quality["score"] == .number(Double(score)))
            #expect(quality["level"] == .string(QualityScore.level(for: score).rawValue))
            let alert = try await b.next("alert")
            #expect(alert["kind"] == .string("high_latency"))
            #expect(alert["participant"] == wa["participant"])
            #expect(alert["value"] == .number(350))
            let video = try await a.next("video")
            #expect(video["maxHeight"] == .number(240))
        }
    }
}

@Suite("Recovery, resume and liveness")
struct RecoveryOverSocketTests {
    @Test func twoSimultaneousFailureReportsSwitchExactlyOnce() async throws {
        try await TestServer.with { server in
            let (a, _) = try await server.join()
            let (b, _) = try await server.join()
            _ = try await a.next("peer-joined")
            let failed = #"{"type":"health","epoch":1,"provider":"p2p","media":"failed"}"#
            a.send(failed)
            b.send(failed)
            for client in [a, b] {
                let p = try await client.next("provider")
                #expect(p["name"] == .string("p2p"))  // only p2p is enabled: an ICE restart at the next epoch
                #expect(p["epoch"] == .number(2))
                #expect(p["reason"] == .string("failure"))
                #expect(p["previous"] == .string("p2p"))
                // Nothing else about providers follows: a ping's pong comes next.
                client.send(#"{"type":"ping","t":7}"#)
                var seen: [String] = []
                while true {
                    let m = try await client.nextAny()!
                    if m["type"] == .string("pong") { break }
                    seen.append(m["type"]!.stringValue!)
                }
                #expect(!seen.contains("provider"))
            }
            let (status, view) = try await server.http("GET", "/v1/sessions/s1")
            #expect(status == 200)
            guard case .array(let history)? = view?["history"] else { Issue.record("no history"); return }
            #expect(history.map { [$0["epoch"], $0["provider"], $0["reason"]] } == [
                [.number(1), .string("p2p"), .string("join")], [.number(2), .string("p2p"), .string("failure")],
            ])
        }
    }

    @Test func aDroppedSocketResumesAndGetsWhatItMissed() async throws {
        try await TestServer.with { server in
            let (a, wa) = try await server.join()
            let (b, wb) = try await server.join()
            _ = try await a.next("peer-joined")
            let bid = wb["participant"]!.stringValue!
            b.send(#"{"type":"ping","t":1}"#)
            let lastSeen = try await b.next("pong")["seq"]!.intValue!
            b.close()
            let state = try await a.next("peer-state")
            #expect(state["peer"] == wb["participant"])
            #expect(state["state"] == .string("reconnecting"))
            // While b is away, a signals it.
            a.send(#"{"type":"signal","to":"\#(bid)","data":{"kind":"restart","epoch":1,"note":"while away"}}"#)
            a.send(#"{"type":"ping","t":2}"#)
            _ = try await a.next("pong")  // the signal has been handled

            let b2 = try await server.connect()
            b2.send(#"{"type":"join","session":"s1","resume":{"participant":"\#(bid)","key":"\#(wb["resumeKey"]!.stringValue!)","lastSeq":\#(lastSeen)}}"#)
            let missed = try await b2.nextAny()!
            #expect(missed["type"] == .string("signal"))
            #expect(missed["seq"] == .number(Double(lastSeen + 1)))
            #expect(missed["data"]?["note"] == .string("while away"))
            #expect(missed["from"] == wa["participant"])
            let welcome = try await b2.next("welcome")
            #expect(welcome["resumed"] == .bool(true))
            #expect(welcome["participant"] == wb["participant"])
            #expect(welcome["seq"] == .number(Double(lastSeen + 2)))
            let back = try await a.next("peer-state")
            #expect(back["state"] == .string("active"))
        }
    }

    @Test func aRefusedResumeSaysSoAndAFreshJoinWorks() async throws {
        try await TestServer.with { server in
            let (_, w) = try await server.join()
            let c = try await server.connect()
            c.send(#"{"type":"join","session":"s1","resume":{"participant":"\#(w["participant"]!.stringValue!)","key":"wrong","lastSeq":0}}"#)
            let e = try await c.next("error")
            #expect(e["code"] == .string("resume_failed"))
            c.send(#"{"type":"join","session":"s1"}"#)
            let fresh = try await c.next("welcome")
            #expect(fresh["resumed"] == .bool(false))
            #expect(fresh["participant"] != w["participant"])
        }
    }

    @Test func aParticipantThatDoesNotComeBackTimesOut() async throws {
        let config = TestServer.config {
            $0.heartbeatInterval = .milliseconds(500)
            $0.heartbeatTimeout = .milliseconds(1500)
        }
        try await TestServer.with(config) { server in
            let (a, _) = try await server.join()
            // a keeps itself alive all along, however slowly the machine runs the rest.
            let keepAlive = Task {
                while !Task.isCancelled {
                    a.send(#"{"type":"ping","t":0}"#)
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            defer { keepAlive.cancel() }
            let (b, wb) = try await server.join()
            _ = try await a.next("peer-joined")
            b.drop()
            #expect(try await a.next("peer-state")["state"] == .string("reconnecting"))
            let left = try await a.next("peer-left")
            #expect(left["peer"] == wb["participant"])
            #expect(left["reason"] == .string("timeout"))
        }
    }

    @Test func theSameIdentityReplacesItsOlderConnection() async throws {
        try await TestServer.with(TestServer.config { $0.dev = false }) { server in
            let tokens = JoinTokens(secret: "test-secret")
            let exp = Int64(Date().timeIntervalSince1970) + 60
            let ann = tokens.sign(JoinClaims(identity: "ann", session: "s1", name: "Ann", expiresAt: exp))
            let ben = tokens.sign(JoinClaims(identity: "ben", session: "s1", name: nil, expiresAt: exp))
            let (a1, wa1) = try await server.join(extra: #","token":"\#(ann)""#)
            #expect(wa1["participant"] != nil)
            let (b, _) = try await server.join(extra: #","token":"\#(ben)""#)
            let (_, wa2) = try await server.join(extra: #","token":"\#(ann)""#)
            #expect(wa2["peers"]?.encoded.count ?? 0 > 0)
            let left = try await b.next("peer-left")
            #expect(left["peer"] == wa1["participant"])
            #expect(left["reason"] == .string("replaced"))
            #expect(try await a1.closeCode().code == 4409)
        }
    }
}

@Suite("Bad input gets an error, never a crash")
struct BadInputTests {
    @Test func errorsKeepTheSocketOpen() async throws {
        try await TestServer.with { server in
            let c = try await server.connect()
            c.send(#"{"type":"ping","t":1}"#)
            #expect(try await c.next("error")["code"] == .string("not_joined"))
            c.send("{nope")
            #expect(try await c.next("error")["code"] == .string("bad_message"))
            c.sendBinary([1, 2, 3])
            #expect(try await c.next("error")["code"] == .string("bad_message"))
            c.send(#"{"type":"join","session":"s1"}"#)
            _ = try await c.next("welcome")
            c.send(#"{"type":"teleport"}"#)
            let unknown = try await c.next("error")
            #expect(unknown["code"] == .string("unknown_type"))
            #expect(unknown["ref"] == .string("teleport"))
            c.send(#"{"type":"join","session":"s1"}"#)
            #expect(try await c.next("error")["code"] == .string("already_joined"))
            c.sendBinary([0xFF])
            let binary = try await c.next("error")
            #expect(binary["code"] == .string("bad_message"))
            #expect(binary["seq"]!.intValue! > 1)  // a joined participant's errors are in its sequence
            c.send(#"{"type":"signal","to":"server","data":{"kind":"offer","epoch":1,"sdp":"v=0"}}"#)
            #expect(try await c.next("error")["code"] == .string("provider_unavailable"))
            c.send(#"{"type":"ping","t":3}"#)
            #expect(try await c.next("pong")["t"] == .number(3))
        }
    }

    @Test func oversizedDeviceIsTooLarge() async throws {
        try await TestServer.with { server in
            let c = try await server.connect()
            c.send(#"{"type":"join","session":"s1","device":{"ua":"\#(String(repeating: "x", count: 2000))"}}"#)
            let e = try await c.next("error")
            #expect(e["code"] == .string("too_large"))
            #expect(e["ref"] == .string("join"))
        }
    }

    @Test func aFrameOver64KiBClosesWith1009() async throws {
        try await TestServer.with { server in
            let (c, _) = try await server.join()
            c.send(#"{"type":"ping","t":1,"pad":""# + String(repeating: "x", count: 70_000) + #""}"#)
            #expect(try await c.closeCode().code == 1009)
        }
    }

    @Test func noJoinInTimeClosesWith4408() async throws {
        try await TestServer.with(TestServer.config { $0.joinTimeout = .milliseconds(300) }) { server in
            let c = try await server.connect()
            #expect(try await c.closeCode().code == 4408)
        }
    }

    @Test func floodingIsRateLimitedThenClosedWith4429() async throws {
        try await TestServer.with(TestServer.config { $0.rateLimitPerSecond = 5; $0.rateLimitBurst = 5 }) { server in
            let (c, _) = try await server.join()
            let (other, _) = try await server.join("elsewhere")
            for i in 0..<400 { c.send(#"{"type":"ping","t":\#(i)}"#) }
            let (code, messages) = try await c.closeCode()
            #expect(code == 4429)
            let errors = messages.filter { $0["type"] == .string("error") }
            #expect(errors.first?["code"] == .string("rate_limited"))
            #expect(errors.count < 20)  // refusals are answered at most once a second, not once each
            // The burst (5, less the join's token) is answered before the close, which goes through the
            // room after them; nothing past the burst is.
            let pongs = messages.filter { $0["type"] == .string("pong") }.count
            #expect(pongs >= 4 && pongs <= 6)
            // Another session did not notice.
            other.send(#"{"type":"ping","t":1}"#)
            #expect(try await other.next("pong")["t"] == .number(1))
        }
    }

    @Test func tooManyCandidatesInOneEpoch() async throws {
        try await TestServer.with(TestServer.config { $0.maxCandidatesPerEpoch = 3 }) { server in
            let (a, _) = try await server.join()
            let (b, wb) = try await server.join()
            let to = wb["participant"]!.stringValue!
            for i in 0..<4 { a.send(#"{"type":"signal","to":"\#(to)","data":{"kind":"candidate","epoch":1,"candidate":"c\#(i)"}}"#) }
            let e = try await a.next("error")
            #expect(e["code"] == .string("rate_limited"))
            for _ in 0..<3 { _ = try await b.next("signal") }
        }
    }

    @Test func garbageNeverTakesTheServerDown() async throws {
        try await TestServer.with { server in
            let (peer, _) = try await server.join("calm")
            var rng = SystemRandomNumberGenerator()
            let pieces = [#"{"type":"#, #""join""#, #""signal""#, #""health""#, "{", "}", "[", "]", ",", ":", #""session":"s""#, "null", "1e9",
                          #""data":{"kind":"offer","epoch":1}"#, #""to":"x""#, "\u{0}", "\\u0000", "\"", "-", "9999999999999999999999"]
            let c = try await server.connect()
            for _ in 0..<300 {
                c.send((0..<Int.random(in: 1...12, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined())
            }
            c.send(#"{"type":"join","session":"s9"}"#)
            peer.send(#"{"type":"ping","t":5}"#)
            #expect(try await peer.next("pong")["t"] == .number(5))
        }
    }
}

@Suite("Join tokens")
struct TokenTests {
    let tokens = JoinTokens(secret: "test-secret")
    var now: Int64 { Int64(Date().timeIntervalSince1970) }

    @Test func signAndVerify() throws {
        let now = self.now  // once: the clock may turn a second during the test
        let t = tokens.sign(JoinClaims(identity: "ann", session: "s1", name: "Ann", expiresAt: now + 60))
        let claims = try tokens.verify(t, session: "s1", nowSeconds: now)
        #expect(claims.identity == "ann" && claims.name == "Ann")
        #expect(throws: TokenError(code: .wrongSession)) { try tokens.verify(t, session: "s2", nowSeconds: now) }
        // Past its expiry by less than the leeway, then by more.
        #expect(try tokens.verify(t, session: "s1", nowSeconds: now + 119).identity == "ann")
        #expect(throws: TokenError(code: .expired)) { try tokens.verify(t, session: "s1", nowSeconds: now + 120) }
        #expect(throws: TokenError(code: .badSignature)) { try JoinTokens(secret: "other").verify(t, session: "s1", nowSeconds: now) }
        #expect(throws: TokenError(code: .malformed)) { try tokens.verify("a.b", session: nil, nowSeconds: now) }
        // alg none with the original payload: refused.
        let parts = t.split(separator: ".")
        let none = Base64URL.encode(Array(#"{"alg":"none"}"#.utf8)) + "." + parts[1] + "."
        #expect(throws: TokenError(code: .unsupportedAlgorithm)) { try tokens.verify(none, session: nil, nowSeconds: now) }
    }

    @Test(arguments: [
        ("none", UInt16(4401), "unauthorized"), ("garbage", 4401, "unauthorized"), ("expired", 4401, "unauthorized"),
        ("other-session", 4403, "forbidden"), ("wrong-secret", 4401, "unauthorized"),
    ])
    func refusedJoinsClose(kind: String, close: UInt16, code: String) async throws {
        let now = self.now
        let token: String? =
            switch kind {
            case "none": nil
            case "garbage": "not.a.jwt"
            case "expired": tokens.sign(JoinClaims(identity: "x", session: "s1", name: nil, expiresAt: now - 3600))
            case "other-session": tokens.sign(JoinClaims(identity: "x", session: "s2", name: nil, expiresAt: now + 60))
            default: JoinTokens(secret: "nope").sign(JoinClaims(identity: "x", session: "s1", name: nil, expiresAt: now + 60))
            }
        try await TestServer.with(TestServer.config { $0.dev = false }) { server in
            let c = try await server.connect()
            c.send(#"{"type":"join","session":"s1"\#(token.map { #","token":"\#($0)""# } ?? "")}"#)
            let (closeCode, messages) = try await c.closeCode()
            #expect(messages.first?["code"] == .string(code))
            #expect(closeCode == close)
        }
    }
}
