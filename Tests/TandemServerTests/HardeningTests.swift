import Foundation
import NIOConcurrencyHelpers
import NIOSSL
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
            // Each refused room's task ends too, once its mailbox is drained.
            try await within(10, "the refused rooms' tasks to end") {
                while try await server.metric("tandem_session_tasks") != 1 { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
    }

    /// A client that reports health as fast as it can, and for epochs that are not the session's, costs
    /// the store a row a second (and one per media state change), not one per report.
    @Test func healthReportsAreSampledForTheStore() async throws {
        let store = FaultyStore()
        // The socket's own rate limit is another bound: lifted here, to see the store's.
        let config = TestServer.config {
            $0.rateLimitPerSecond = 10_000
            $0.rateLimitBurst = 10_000
        }
        try await Self.withBystander(config, store: store) { server in
            let before = store.healthRecords.withLockedValue { $0 }
            let (c, _) = try await server.join("s1")
            for i in 0..<300 {
                c.send(#"{"type":"health","epoch":\#(i % 3 == 0 ? 7 : 1),"provider":"p2p","media":"connecting","rttMs":\#(i)}"#)
            }
            c.send(#"{"type":"health","epoch":1,"provider":"p2p","media":"connected"}"#)
            c.send(#"{"type":"ping","t":1}"#)
            _ = try await c.next("pong")
            let written = store.healthRecords.withLockedValue { $0 } - before
            // The first report, the change to connected, and one more for each second the burst took.
            #expect(written >= 2 && written <= 6, "\(written) samples for 301 reports")
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

/// Which web pages may open the signaling socket.
@Suite("Operators: origins, metrics, TLS suites")
struct OperatorTests {
    @Test(arguments: [
        // origin, Host, from loopback, allowed list, dev, admitted
        (nil as String?, "tandem.example.com", false, [String](), false, true),  // no browser
        ("https://tandem.example.com", "tandem.example.com", false, [], false, true),  // its own page
        ("https://tandem.example.com", "tandem.example.com:443", false, [], false, true),
        ("https://TANDEM.example.com:8443", "tandem.example.com:8443", false, [], false, true),
        ("http://tandem.example.com", "tandem.example.com", false, [], false, false),  // another port (80)
        ("https://evil.example", "tandem.example.com", false, [], false, false),
        ("null", "tandem.example.com", false, [], false, false),
        ("https://app.example.com", "tandem.example.com", false, ["https://app.example.com"], false, true),
        ("https://app.example.com:444", "tandem.example.com", false, ["https://app.example.com"], false, false),
        ("https://evil.example", "tandem.example.com", false, ["*"], false, true),
        ("https://evil.example", "127.0.0.1:8443", true, [], true, true),  // dev, from loopback
        ("https://evil.example", "10.0.0.5:8443", false, [], true, false),  // dev, from elsewhere
        ("https://[::1]:8443", "[::1]:8443", false, [], false, true),
        ("ws://127.0.0.1", "tandem.example.com", false, [], false, true),  // a WebSocket library, no page
        ("null", "tandem.example.com", false, ["null"], false, true),
    ])
    func originPolicy(origin: String?, host: String, loopback: Bool, allowed: [String], dev: Bool, admitted: Bool) {
        #expect(OriginPolicy(allowed: allowed, dev: dev, tls: true).admits(origin: origin, host: host, fromLoopback: loopback) == admitted)
    }

    /// The status line a browser's WebSocket handshake from `origin` gets.
    static func handshake(_ server: TestServer, origin: String?) async throws -> String {
        let fd = try RawTCP.connect(server.port)
        defer { close(fd) }
        let request = "GET /v1/signal HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + (origin.map { "Origin: \($0)\r\n" } ?? "") + "\r\n"
        _ = RawTCP.send(fd, Array(request.utf8))
        guard case .bytes(let answer) = await RawTCP.read(fd, within: 10) else { return "" }
        return String(String(decoding: answer, as: UTF8.self).split(separator: "\r\n").first ?? "")
    }

    @Test func aForeignPageCannotOpenTheSocketAndIsToldWhy() async throws {
        try await TestServer.with(TestServer.config { $0.dev = false }) { server async throws in
            // Refused before the upgrade (NIO answers a declined upgrade with 400; a page's script never
            // sees the status anyway, only that no socket opened).
            #expect(try await Self.handshake(server, origin: "https://evil.example") == "HTTP/1.1 400 Bad Request")
            #expect(try await Self.handshake(server, origin: "null") == "HTTP/1.1 400 Bad Request")
            // Without the upgrade, the reason.
            #expect(try await server.fetch("GET", "/v1/signal", headers: ["Origin": "https://evil.example"]).status == 403)
            #expect(try await Self.handshake(server, origin: "http://127.0.0.1:\(server.port)") == "HTTP/1.1 101 Switching Protocols")
            #expect(try await Self.handshake(server, origin: nil) == "HTTP/1.1 101 Switching Protocols")
            #expect(try await server.fetch("GET", "/v1/signal").status == 426)
        }
        // The same page in dev mode, from loopback: let in.
        try await TestServer.with { server async throws in
            #expect(try await Self.handshake(server, origin: "https://evil.example") == "HTTP/1.1 101 Switching Protocols")
        }
    }

    @Test func metricsCanAskForTheKey() async throws {
        try await TestServer.with(TestServer.config { $0.metricsNeedKey = true }) { server in
            let anonymous = try await server.fetch("GET", "/metrics").status
            let keyed = try await server.fetch("GET", "/metrics", headers: ["Authorization": "Bearer test-key"]).status
            #expect(anonymous == 401 && keyed == 200)
        }
        try await TestServer.with { server in
            let open = try await server.fetch("GET", "/metrics").status
            #expect(open == 200)
        }
    }

    /// TLS 1.2 offers forward-secret AEAD suites only: a client that speaks only CBC or static RSA gets
    /// no connection, one with ECDHE and GCM does.
    @Test(arguments: [("ECDHE-ECDSA-AES128-SHA", false), ("AES128-GCM-SHA256", false), ("AES256-SHA", false), ("ECDHE-ECDSA-AES128-GCM-SHA256", true)])
    func tls12Suites(suite: String, connects: Bool) async throws {
        let directory = NSTemporaryDirectory() + "tandem-suites-\(UUID().uuidString)"
        _ = try DevCertificates.ensure(in: directory)
        let paths = DevCertificates.Paths(directory: directory)
        try await TestServer.with(TestServer.config { $0.tls = .files(certificate: paths.certificate, key: paths.key) }) { server in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(paths.caCertificate)
            tls.maximumTLSVersion = .tlsv12
            tls.cipherSuites = suite
            if connects {
                let c = try await WSTestClient.connect(url: server.wsURL, tls: tls, sniHostname: "localhost")
                c.send(#"{"type":"ping","t":1}"#)
                #expect(try await c.next("error")["code"] == .string("not_joined"))
            } else {
                await #expect(throws: (any Error).self) { _ = try await WSTestClient.connect(url: server.wsURL, tls: tls, sniHostname: "localhost") }
            }
        }
    }

    /// A renewed certificate is served without a restart (what SIGHUP does); a file that does not read is
    /// refused and the pair in use stays; an open connection goes on either way.
    @Test func theCertificateIsReadAgainWithoutARestart() async throws {
        let live = DevCertificates.Paths(directory: NSTemporaryDirectory() + "tandem-live-\(UUID().uuidString)")
        let renewed = DevCertificates.Paths(directory: NSTemporaryDirectory() + "tandem-renewed-\(UUID().uuidString)")
        _ = try DevCertificates.ensure(in: live.directory)
        _ = try DevCertificates.ensure(in: renewed.directory)
        try await TestServer.with(TestServer.config { $0.tls = .files(certificate: live.certificate, key: live.key) }) { server in
            func connects(trusting ca: String) async -> Bool {
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.trustRoots = .file(ca)
                guard let c = try? await WSTestClient.connect(url: server.wsURL, tls: tls, sniHostname: "localhost") else { return false }
                c.send(#"{"type":"ping","t":1}"#)
                return (try? await c.next("error")["code"]) == .string("not_joined")
            }
            let reloader = try #require(server.certificates)
            #expect(await connects(trusting: live.caCertificate))
            #expect(await !connects(trusting: renewed.caCertificate))
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(live.caCertificate)
            let open = try await WSTestClient.connect(url: server.wsURL, tls: tls, sniHostname: "localhost")

            let files = FileManager.default
            let saved = try Data(contentsOf: URL(fileURLWithPath: live.certificate))
            try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: live.certificate))
            #expect(throws: SetupError.self) { try reloader.reload() }
            #expect(await connects(trusting: live.caCertificate), "the pair in use stays")
            try saved.write(to: URL(fileURLWithPath: live.certificate))

            for (from, to) in [(renewed.certificate, live.certificate), (renewed.key, live.key)] {
                try files.removeItem(atPath: to)
                try files.copyItem(atPath: from, toPath: to)
            }
            try reloader.reload()
            #expect(await connects(trusting: renewed.caCertificate))
            #expect(await !connects(trusting: live.caCertificate))
            open.send(#"{"type":"ping","t":2}"#)
            #expect(try await open.next("error")["code"] == .string("not_joined"))
        }
    }
}
