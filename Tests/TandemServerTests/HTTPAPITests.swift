import Foundation
import NIOSSL
import TandemProtocol
import TandemStore
import Testing

@testable import TandemServer

@Suite("HTTP API")
struct HTTPAPITests {
    @Test func probesAndMetrics() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            #expect(try await server.http("GET", "/healthz", key: nil).0 == 200)
            #expect(try await server.http("GET", "/readyz", key: nil).0 == 200)
            let (a, _) = try await server.join()
            a.send(#"{"type":"ping","t":1}"#)
            _ = try await a.next("pong")
            let metrics = server.hub.metrics.render()
            for line in [
                "tandem_connections 1", "tandem_sessions 1", "tandem_participants 1", #"tandem_messages_in_total{type="join"} 1"#,
                #"tandem_messages_in_total{type="ping"} 1"#, #"tandem_messages_out_total{type="welcome"} 1"#,
                #"tandem_messages_out_total{type="pong"} 1"#, #"tandem_errors_total{code="bad_message"} 0"#,
                #"tandem_switches_total{reason="failure"} 0"#, "tandem_join_duration_seconds_count 1",
            ] {
                #expect(metrics.contains(line), "\(line)")
            }
            // The served page adds the relay's and the heap's figures.
            #expect(try await server.metric(#"tandem_heap_bytes{state="in_use"}"#) > 0)
            server.hub.drain()
            #expect(try await server.http("GET", "/readyz", key: nil).0 == 503)
            #expect(try await a.closeCode().code == 4000)
        }
    }

    @Test(arguments: ["/v1/providers", "/v1/sessions/s1", "/v1/sessions/s1/alerts"])
    func adminEndpointsNeedTheKey(path: String) async throws {
        try await TestServer.with { (server: TestServer) async throws in
            #expect(try await server.http("GET", path, key: nil).0 == 401)
            #expect(try await server.http("GET", path, key: "wrong").0 == 401)
        }
    }

    @Test func adminWritesNeedTheKey() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            #expect(try await server.http("POST", "/v1/tokens", key: nil, body: #"{"session":"s","identity":"i"}"#).0 == 401)
            #expect(try await server.http("POST", "/v1/sessions/s1/provider", key: "nope", body: #"{"name":"p2p"}"#).0 == 401)
        }
    }

    @Test func mintedTokensAdmit() async throws {
        try await TestServer.with(TestServer.config { $0.dev = false }) { (server: TestServer) async throws in
            let (status, body) = try await server.http("POST", "/v1/tokens", body: #"{"session":"s1","identity":"ann","name":"Ann","ttlSeconds":60}"#)
            #expect(status == 200)
            let token = try #require(body?["token"]?.stringValue)
            let (_, welcome) = try await server.join("s1", extra: #","token":"\#(token)""#)
            #expect(welcome["participant"] != nil)
            let tampered = try await server.connect()
            tampered.send(#"{"type":"join","session":"s1","token":"\#(token.dropLast(2))xx"}"#)
            #expect(try await tampered.closeCode().code == 4401)
            #expect(try await server.http("POST", "/v1/tokens", body: #"{"session":"bad id","identity":"ann"}"#).0 == 400)
            #expect(try await server.http("POST", "/v1/tokens", body: #"{"session":"s","identity":"ann","ttlSeconds":0}"#).0 == 400)
            #expect(try await server.http("POST", "/v1/tokens", body: "not json").0 == 400)
        }
    }

    @Test func sessionViewAndAlerts() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            #expect(try await server.http("GET", "/v1/sessions/unknown").0 == 404)
            #expect(try await server.http("GET", "/v1/sessions/bad%20id").0 == 400)
            let (a, wa) = try await server.join("s1", extra: #","name":"Ann""#)
            a.send(#"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":500,"lossPct":9,"candidateType":"srflx"}"#)
            _ = try await a.next("alert")
            a.send(#"{"type":"ping","t":1}"#)
            _ = try await a.next("pong")
            let (status, view) = try await server.http("GET", "/v1/sessions/s1")
            #expect(status == 200)
            #expect(view?["session"] == .string("s1"))
            #expect(view?["provider"] == .object(["name": .string("p2p"), "epoch": .number(1)]))
            guard case .array(let participants)? = view?["participants"], let p = participants.first else { Issue.record(); return }
            #expect(p["id"] == wa["participant"])
            #expect(p["name"] == .string("Ann"))
            #expect(p["state"] == .string("active"))
            #expect(p["lastSeenMs"]?.doubleValue ?? 0 > 1_700_000_000_000)
            #expect(p["health"]?["rttMs"] == .number(500))
            #expect(p["health"]?["candidateType"] == .string("srflx"))
            let (_, alerts) = try await server.http("GET", "/v1/sessions/s1/alerts")
            guard case .array(let list)? = alerts?["alerts"] else { Issue.record(); return }
            #expect(Set(list.compactMap { $0["kind"]?.stringValue }) == ["high_latency", "packet_loss"])
            #expect(alerts?["next"] == nil)
            let (one, firstPage) = try await server.http("GET", "/v1/sessions/s1/alerts?limit=1")
            guard case .array(let page)? = firstPage?["alerts"] else { Issue.record(); return }
            #expect(one == 200 && page.count >= 1 && page.count <= 2)
            for bad in ["limit=0", "limit=1001", "limit=many", "before=soon"] {
                #expect(try await server.http("GET", "/v1/sessions/s1/alerts?\(bad)").0 == 400, "\(bad)")
            }
        }
    }

    /// Pages of alerts walk back from the newest without skipping one, even across alerts of one millisecond.
    @Test func alertPagesCoverEveryAlertOnce() {
        let times: [Int64] = [1, 2, 2, 2, 3, 4, 5, 5, 6, 7]
        let alerts = times.enumerated().map { AlertRecord(kind: .packetLoss, participant: ParticipantID("a"), value: Double($0.offset), atMs: $0.element) }
        for limit in 1...11 {
            var seen: [Double] = []
            var before: Int64?
            var pages = 0
            repeat {
                let (page, next) = AdminAPI.page(alerts, limit: limit, before: before)
                #expect(!page.isEmpty && page.map(\.atMs) == page.map(\.atMs).sorted())
                seen = page.map(\.value) + seen
                before = next
                pages += 1
            } while before != nil && pages < 20
            #expect(seen == alerts.map(\.value), "limit \(limit)")
        }
    }

    @Test func forcedSwitchReachesEveryParticipant() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            let (a, _) = try await server.join()
            let (b, _) = try await server.join()
            let (status, view) = try await server.http("POST", "/v1/sessions/s1/provider", body: #"{"name":"p2p"}"#)
            #expect(status == 200)
            #expect(view?["provider"] == .object(["name": .string("p2p"), "epoch": .number(2)]))
            for c in [a, b] {
                let p = try await c.next("provider")
                #expect(p["epoch"] == .number(2))
                #expect(p["reason"] == .string("admin"))
            }
            #expect(try await server.http("POST", "/v1/sessions/s1/provider", body: #"{"name":"relay"}"#).0 == 409)
            #expect(try await server.http("POST", "/v1/sessions/s1/provider", body: #"{"name":"carrier"}"#).0 == 400)
            #expect(try await server.http("POST", "/v1/sessions/none/provider", body: #"{"name":"p2p"}"#).0 == 404)
        }
    }

    @Test func providersListScoresAndWhatIsEnabled() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            let (a, _) = try await server.join()
            a.send(#"{"type":"health","epoch":1,"provider":"p2p","media":"connected"}"#)
            a.send(#"{"type":"ping","t":1}"#)
            _ = try await a.next("pong")
            let (status, body) = try await server.http("GET", "/v1/providers")
            #expect(status == 200)
            #expect(body?["providers"] == .array([
                .object(["name": .string("p2p"), "score": .number(85), "enabled": .bool(true)]),
                .object(["name": .string("relay"), "score": .number(70), "enabled": .bool(false)]),
                .object(["name": .string("sfu"), "score": .number(60), "enabled": .bool(false)]),
            ]))
        }
    }
}

@Suite("TLS")
struct TLSTests {
    @Test func wssWithTheDevelopmentCertificates() async throws {
        let directory = NSTemporaryDirectory() + "tandem-certs-\(UUID().uuidString)"
        #expect(try DevCertificates.ensure(in: directory))
        #expect(try DevCertificates.ensure(in: directory) == false)  // kept when present
        let paths = DevCertificates.Paths(directory: directory)
        let config = TestServer.config { $0.tls = .files(certificate: paths.certificate, key: paths.key) }
        try await TestServer.with(config) { server in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(paths.caCertificate)
            // NIOSSL sends no SNI for an IP address, so the 127.0.0.1 connection names localhost.
            for host in ["127.0.0.1", "localhost"] {
                let c = try await WSTestClient.connect(url: "wss://\(host):\(server.port)/v1/signal", tls: tls, sniHostname: "localhost")
                c.send(#"{"type":"join","session":"secure"}"#)
                #expect(try await c.next("welcome")["session"] == .string("secure"))
            }
            // A client that does not trust the CA cannot connect.
            let untrusted = TLSConfiguration.makeClientConfiguration()
            await #expect(throws: (any Error).self) {
                let c = try await WSTestClient.connect(url: server.wsURL, tls: untrusted, sniHostname: "localhost")
                _ = try await c.closeCode()
            }
        }
    }

    @Test func unreadableCertificatesGiveOneClearError() {
        #expect(throws: SetupError.self) { try CertificateReloader(certificate: "/nonexistent.pem", key: "/nonexistent-key.pem") }
    }
}
