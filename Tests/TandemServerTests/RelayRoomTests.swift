import Foundation
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import Testing

@testable import TandemServer

/// The media relay inside a running server: signals to peer `server`, a leg that fails, the admin view
/// and metrics. (Media through the relay is tested in TandemMediaTests and end to end.)
@Suite("Relay in a session")
struct RelayRoomTests {
    static func config(handshakeTimeoutMs: Int = 300, certificate: PEMFiles? = nil) -> ServerConfig {
        TestServer.config { c in
            var relay = RelaySettings(addresses: ["127.0.0.1"], threads: 1, certificate: certificate)
            relay.handshakeTimeoutMs = handshakeTimeoutMs
            c.relay = relay
            c.arbiter.enabled = [.p2p, .relay]
        }
    }

    /// An audio offer with no candidates: the relay answers, but ICE can never connect.
    static let offer = [
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
        "a=mid:0", "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdefghijkl",
        "a=fingerprint:sha-256 " + (0..<32).map { _ in "AB" }.joined(separator: ":"), "a=setup:actpass", "a=sendrecv", "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
    ].joined(separator: "\\r\\n") + "\\r\\n"

    static func signal(_ kind: String, epoch: Int, sdp: String? = nil) -> String {
        #"{"type":"signal","to":"server","data":{"kind":"\#(kind)","epoch":\#(epoch)"# + (sdp.map { #","sdp":"\#($0)""# } ?? "") + "}}"
    }

    @Test func aLegThatNeverConnectsFailsItsEpochAsTheServersOwnFinding() async throws {
        try await TestServer.with(Self.config()) { (server: TestServer) async throws in
            let relayOnly = #","providers":["relay"]"#
            let (a, welcome) = try await server.join("r1", extra: relayOnly)
            let (b, _) = try await server.join("r1", extra: relayOnly)
            #expect(welcome["provider"]?["name"] == .string("relay"))
            a.send(Self.signal("offer", epoch: 1, sdp: Self.offer))
            let answer = try await a.next("signal")
            #expect(answer["from"] == .string("server"))
            #expect(answer["data"]?["kind"] == .string("answer") && answer["data"]?["epoch"] == .number(1))
            let sdp = answer["data"]?["sdp"]?.stringValue ?? ""
            #expect(sdp.contains("a=setup:passive") && sdp.contains("a=candidate:") && sdp.contains("127.0.0.1"))
            // Host candidates went in the answer; gathering is over, so end-of-candidates follows at once.
            #expect(try await a.next("signal")["data"]?["kind"] == .string("end-of-candidates"))

            // No candidates, so no ICE: the leg fails after its handshake timeout, and both move on once.
            for c in [a, b] {
                let moved = try await c.next("provider")
                #expect(moved["epoch"] == .number(2) && moved["reason"] == .string("failure"))
            }
            let (_, view) = try await server.http("GET", "/v1/sessions/r1")
            guard case .array(let participants)? = view?["participants"] else {
                Issue.record("no participants in \(String(describing: view))")
                return
            }
            #expect(participants.count == 2)
            #expect(participants.allSatisfy { $0["health"] == nil }, "the server's finding is not a report from the participant")
            let text = String(decoding: try await server.fetch("GET", "/metrics").body, as: UTF8.self)
            #expect(text.contains("# TYPE tandem_relay_legs gauge"))
            #expect(text.contains("tandem_relay_legs_failed_total 1\n"))
            #expect(text.contains("tandem_relay_legs 0\n"))
        }
    }

    @Test func signalsToTheServerAreCheckedBeforeTheRelaySeesThem() async throws {
        try await TestServer.with(Self.config()) { (server: TestServer) async throws in
            let (p2p, _) = try await server.join("p")
            p2p.send(Self.signal("offer", epoch: 1, sdp: Self.offer))
            #expect(try await p2p.next("error")["code"] == .string("provider_unavailable"))

            let (a, _) = try await server.join("r2", extra: #","providers":["relay"]"#)
            a.send(Self.signal("offer", epoch: 7, sdp: Self.offer))
            #expect(try await a.next("error")["code"] == .string("stale_epoch"))
            a.send(Self.signal("offer", epoch: 1, sdp: "v=0"))
            let bad = try await a.next("error")
            #expect(bad["code"] == .string("bad_message") && bad["ref"] == .string("signal"))
            #expect(bad["message"]?.stringValue?.contains("bad_sdp") == true)
            // A restart to the server is ignored (each relay epoch has fresh legs): nothing comes back.
            a.send(Self.signal("restart", epoch: 1))
            a.send(#"{"type":"ping","t":5}"#)
            #expect(try await a.nextAny()?["type"] == .string("pong"))
        }
    }

    @Test func aConfiguredDTLSCertificateIsTheRelaysAndAMissingOneIsRefused() async throws {
        let directory = NSTemporaryDirectory() + "tandem-relay-cert-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (cert, key) = try DTLSIdentity.generatePEM()
        let files = PEMFiles(certificate: directory + "/cert.pem", key: directory + "/key.pem")
        try cert.write(toFile: files.certificate, atomically: true, encoding: .utf8)
        try key.write(toFile: files.key, atomically: true, encoding: .utf8)
        try await TestServer.with(Self.config(certificate: files)) { (server: TestServer) async throws in
            #expect(server.hub.relay?.identity.certificatePEM == cert)
        }
        #expect(throws: SetupError.self) {
            _ = try makeRelay(RelaySettings(addresses: ["127.0.0.1"], threads: 1, certificate: PEMFiles(certificate: directory + "/none.pem", key: files.key)), dev: true)
        }
    }
}
