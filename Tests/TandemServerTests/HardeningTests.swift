import Foundation
import TandemJWT
import TandemArbiter
import TandemDailyStandIn
import TandemProtocol
import TandemSFU
import TandemStore
import Testing

@testable import TandemServer

/// A signed token's claims as the verifier reads them, at a fixed `now`: every number a token can
/// carry gives an answer, never a trap.
@Suite("Join token claims")
struct TokenClaimTests {
    static let now: Int64 = 1_800_000_000
    static let secret = "token-claims-secret"

    @Test(arguments: [
        // exp: far beyond any Int64, negative, not a number, missing, fractional, just past (within the
        // 60 s leeway) and past it.
        (#""exp":1e19"#, nil as TokenError.Code?),
        (#""exp":9.3e18"#, nil),
        (#""exp":1e308"#, nil),
        (#""exp":-1e19"#, .expired),
        (#""exp":-1e308"#, .expired),
        (#""exp":1500000000"#, .expired),
        (#""exp":"1800000100""#, .malformed),
        (#""exp":null"#, .malformed),
        (#""exp":[1]"#, .malformed),
        (#""iat":1"#, .malformed),
        (#""exp":1800000100.9"#, nil),
        (#""exp":1799999950"#, nil),
        (#""exp":1799999900"#, .expired),
        // nbf and iat: in the future by less than the leeway, by more, absurdly, absurdly past, not a number.
        (#""exp":1800003600,"nbf":1800000030"#, nil),
        (#""exp":1800003600,"nbf":1800000100"#, .notYetValid),
        (#""exp":1800003600,"nbf":1e19"#, .notYetValid),
        (#""exp":1800003600,"nbf":-1e300"#, nil),
        (#""exp":1800003600,"iat":1800000030"#, nil),
        (#""exp":1800003600,"iat":1800000100"#, .notYetValid),
        (#""exp":1800003600,"iat":9e18"#, .notYetValid),
        (#""exp":1800003600,"iat":"yesterday""#, .malformed),
        (#""exp":1800003600,"nbf":true"#, .malformed),
    ])
    func numericDates(claims: String, refusal: TokenError.Code?) throws {
        let token = HS256JWT(secret: Self.secret).sign(payload: Array(#"{"sub":"ann","session":"s1",\#(claims)}"#.utf8))
        let tokens = JoinTokens(secret: Self.secret)
        if let refusal {
            #expect(throws: TokenError(code: refusal)) { try tokens.verify(token, session: "s1", nowSeconds: Self.now) }
        } else {
            let verified = try tokens.verify(token, session: "s1", nowSeconds: Self.now)
            #expect(verified.identity == "ann" && verified.expiresAt > Self.now - tokens.leewaySeconds)
        }
    }

    /// An exponent no Double holds is refused by the JSON reader or as not finite, either way malformed.
    @Test func anInfiniteExpiryIsMalformed() {
        let token = HS256JWT(secret: Self.secret).sign(payload: Array(#"{"sub":"ann","session":"s1","exp":1e999}"#.utf8))
        #expect(throws: TokenError(code: .malformed)) { try JoinTokens(secret: Self.secret).verify(token, session: "s1", nowSeconds: Self.now) }
    }
}

/// What a hostile peer or a careless operator can send a running server. Each row is answered as it
/// should be, and a bystander session on the same server carries on.
@Suite("Hardening: hostile input is answered and other sessions carry on")
struct HardeningTests {
    static let secret = "test-secret"

    static func token(_ claims: String) -> String {
        HS256JWT(secret: secret).sign(payload: Array(claims.utf8))
    }

    /// Joins a bystander session with a valid token, runs `row`, and checks that the bystander still
    /// gets its pong and that the server's process is alive to answer it.
    static func withBystander(
        _ config: ServerConfig = TestServer.config { $0.dev = false }, store: (any SessionStore)? = nil,
        _ row: @escaping @Sendable (TestServer) async throws -> Void
    ) async throws {
        try await TestServer.with(config, store: store) { server in
            let exp = Int64(Date().timeIntervalSince1970) + 600
            let pass = JoinTokens(secret: secret).sign(JoinClaims(identity: "bystander", session: "bystander", name: nil, expiresAt: exp))
            let (bystander, _) = try await server.join("bystander", extra: #","token":"\#(pass)""#)
            try await row(server)
            bystander.send(#"{"type":"ping","t":7}"#)
            #expect(try await bystander.next("pong")["t"] == .number(7))
        }
    }

    /// Signed join tokens whose numbers are out of any range: a welcome or a 4401, never a crash.
    @Test(arguments: [
        (#"{"sub":"x","session":"s1","exp":1e19}"#, nil as String?),
        (#"{"sub":"x","session":"s1","exp":1e19,"iat":-1e300}"#, nil),
        (#"{"sub":"x","session":"s1","exp":-1e19}"#, "unauthorized"),
        (#"{"sub":"x","session":"s1","exp":1e300,"nbf":1e19}"#, "unauthorized"),
        (#"{"sub":"x","session":"s1","exp":"never"}"#, "unauthorized"),
    ])
    func signedTokensWithAbsurdNumbers(claims: String, refusal: String?) async throws {
        try await Self.withBystander { server in
            let c = try await server.connect()
            c.send(#"{"type":"join","session":"s1","token":"\#(Self.token(claims))"}"#)
            if let refusal {
                let (code, messages) = try await c.closeCode()
                #expect(messages.first?["code"] == .string(refusal))
                #expect(code == 4401)
            } else {
                #expect(try await c.next("welcome")["session"] == .string("s1"))
            }
        }
    }

    /// A join the server refuses leaves no room behind, on every refusal path: `tandem_sessions` is back
    /// where it was (the bystander's one) after each of many refusals.
    @Test(arguments: ["resume-unknown", "no-enabled-provider", "provider-not-offered", "store-failure"])
    func refusedJoinsLeaveNoRoom(path: String) async throws {
        let store = FaultyStore()
        let config = TestServer.config { $0.arbiter.enabled = [.p2p, .relay] }
        try await Self.withBystander(config, store: store) { server in
            #expect(try await server.metric("tandem_sessions") == 1)
            var expected = "provider_unavailable"
            var join = #"{"type":"join","session":"s1","providers":["p2p"]}"#
            switch path {
            case "resume-unknown":
                join = #"{"type":"join","session":"s1","resume":{"participant":"p-unknown","key":"nope","lastSeq":0}}"#
                expected = "resume_failed"
            case "no-enabled-provider":
                join = #"{"type":"join","session":"s1","providers":["sfu"]}"#
            case "store-failure":
                store.setFailing(true)
                expected = "internal"
            default:
                break
            }
            for _ in 0..<20 {
                if path == "provider-not-offered" {
                    // The store has the session on relay (as another node would put it); this joiner
                    // offers p2p only.
                    _ = try await store.claimProvider(SessionID("s1")!, proposed: .relay, atMs: 0)
                }
                let c = try await server.connect()
                c.send(join)
                #expect(try await c.next("error")["code"] == .string(expected))
                c.close()
            }
            store.setFailing(false)
            #expect(try await server.metric("tandem_sessions") == 1)
            #expect(await server.hub.snapshot(SessionID("s1")!) == nil)
        }
    }

    /// A first joiner that must land on the SFU while its service fails is refused, and no room stays.
    @Test func aRefusedFirstJoinerOnAFailingSFULeavesNoRoom() async throws {
        try await DailyStandIn.withRunning(apiKey: "daily-key-0123456789") { standIn, base in
            standIn.setFaults(StandInFaults(failNext: 1000, failStatus: 503))
            let config = TestServer.config { c in
                var sfu = SFUSettings(api: DailyConfiguration(baseURL: base, apiKey: "daily-key-0123456789"))
                sfu.api.retry.base = .milliseconds(5)
                sfu.api.retry.cap = .milliseconds(40)
                c.sfu = sfu
                c.arbiter.enabled = [.p2p, .sfu]
            }
            try await Self.withBystander(config) { server in
                let c = try await server.connect()
                c.send(#"{"type":"join","session":"s1","providers":["sfu"]}"#)
                #expect(try await c.next("error")["code"] == .string("provider_unavailable"))
                #expect(try await server.metric("tandem_sessions") == 1)
            }
        }
    }
}
