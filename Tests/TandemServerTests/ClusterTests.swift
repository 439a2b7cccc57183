import Foundation
import NIOConcurrencyHelpers
import TandemArbiter
import TandemProtocol
import TandemStore
import Testing

@testable import TandemServer

@Suite("A node's lease: renewal → until when it may serve")
struct NodeLeaseTests {
    @Test func heldFromARenewalUntilTheLeaseLessItsMargin() {
        var lease = NodeLease(length: .seconds(6), margin: .seconds(2))
        #expect(!lease.wasEverHeld && !lease.holds(at: .zero))
        lease.renewed(sentAt: .seconds(10))
        // (time → holds)
        for (at, holds) in [(10.0, true), (13.9, true), (14.0, false), (20.0, false)] {
            #expect(lease.holds(at: .seconds(at)) == holds, "at \(at)")
        }
        // A late answer to an older renewal does not shorten a newer one.
        lease.renewed(sentAt: .seconds(12))
        lease.renewed(sentAt: .seconds(11))
        #expect(lease.holds(at: .seconds(15.9)) && !lease.holds(at: .seconds(16)))
    }
}

/// Nodes that share one store: a session is served by one node at a time. (In-process nodes on one
/// memory store stand for nodes on one PostgreSQL; the store contract tests hold both to the same rules.)
@Suite("Many nodes on one store")
struct ClusterTests {
    static let secret = "cluster-test-secret-0123456789"

    /// A node reached at the address it listens on, bridging with `secret`.
    static func linked(_ name: String, secret: String = secret) -> ServerConfig {
        TestServer.config {
            $0.node = name
            $0.clusterSecret = secret
        }
    }

    static func node(_ name: String, _ edit: @escaping (inout ServerConfig) -> Void = { _ in }) -> ServerConfig {
        TestServer.config {
            $0.node = name
            $0.advertise = "\(name).example:8443"
            edit(&$0)
        }
    }

    func eventually(_ what: String, _ condition: @escaping @Sendable () async throws -> Bool) async throws {
        try await within(10, what) {
            while try await !condition() { try await Task.sleep(for: .milliseconds(20)) }
        }
    }

    @Test func twoNodesNeverSplitASession() async throws {
        let store = MemoryStore()
        try await TestServer.with(Self.node("n1"), store: store) { n1 in
            try await TestServer.with(Self.node("n2"), store: store) { n2 in
                let (a, _) = try await n1.join("s1")
                // The second participant comes through the other node: it is told which node serves the
                // session instead of being put in a session of its own.
                let b = try await n2.connect()
                b.send(#"{"type":"join","session":"s1"}"#)
                let refused = try await b.next("error")
                #expect(refused["code"] == .string("provider_unavailable"))
                #expect(refused["message"]?.stringValue?.contains("node n1 at n1.example:8443") == true)
                // Other sessions are served by whichever node is asked.
                let (c, _) = try await n2.join("s2")
                let (_, nodes) = try await n2.http("GET", "/v1/nodes")
                #expect(nodes?["nodes"] == .array([
                    .object(["name": .string("n1"), "address": .string("n1.example:8443"), "state": .string("serving")]),
                    .object(["name": .string("n2"), "address": .string("n2.example:8443"), "state": .string("serving")]),
                ]))
                let (_, view) = try await n2.http("GET", "/v1/sessions/s1")
                #expect(view?["home"]?["node"] == .string("n1"))
                // Once the session ends on n1, n2 may serve it.
                a.send(#"{"type":"leave"}"#)
                _ = try await a.closeCode()
                try await eventually("s1 to have no home") { try await store.home(SessionID("s1")!) == nil }
                let (_, welcome) = try await n2.join("s1")
                #expect(welcome["server"]?["node"] == .string("n2"))
                c.close()
            }
        }
    }

    /// A participant whose socket lands on another node is bridged to the session's home: one session,
    /// signals both ways, the home's welcome, a leave; a node with another secret bridges nobody.
    @Test func aJoinThroughAnotherNodeIsBridgedToTheHome() async throws {
        let store = MemoryStore()
        let n3Config = Self.linked("n3", secret: "another-secret-0123456789")
        try await TestServer.with(Self.linked("n1"), store: store) { n1 in
            try await TestServer.with(Self.linked("n2"), store: store) { n2 in
                let (a, wa) = try await n1.join("s1", extra: #","name":"Ann""#)
                let (b, wb) = try await n2.join("s1", extra: #","name":"Bob""#)
                #expect(wb["server"]?["node"] == .string("n1"))
                guard case .array(let peers)? = wb["peers"] else { Issue.record("no peers"); return }
                #expect(peers.first?["id"] == wa["participant"])
                #expect(wb["provider"]?["epoch"] == wa["provider"]?["epoch"])
                let joined = try await a.next("peer-joined")
                #expect(joined["peer"]?["id"] == wb["participant"] && joined["peer"]?["name"] == .string("Bob"))
                let aid = wa["participant"]!.stringValue!, bid = wb["participant"]!.stringValue!
                for i in 0..<20 {
                    a.send(#"{"type":"signal","to":"\#(bid)","data":{"kind":"offer","sdp":"v=0","epoch":1,"n":\#(i)}}"#)
                    b.send(#"{"type":"signal","to":"\#(aid)","data":{"kind":"offer","sdp":"v=0","epoch":1,"n":\#(i)}}"#)
                }
                for i in 0..<20 {
                    #expect(try await b.next("signal")["data"]?["n"] == .number(Double(i)))
                    #expect(try await a.next("signal")["data"]?["n"] == .number(Double(i)))
                }
                b.send(#"{"type":"ping","t":9}"#)
                #expect(try await b.next("pong")["t"] == .number(9))
                // The admin view through the node that is not home is the home's live one (only a live
                // view knows the ladder's height).
                b.send(#"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":40}"#)
                _ = try await b.next("quality")
                let (_, liveView) = try await n2.http("GET", "/v1/sessions/s1")
                guard case .array(let participants)? = liveView?["participants"] else { Issue.record("no participants"); return }
                #expect(participants.count == 2)
                let bView = participants.first { $0["id"] == wb["participant"] }
                #expect(bView?["health"]?["maxVideoHeight"] != nil && bView?["health"]?["rttMs"] == .number(40))
                // Both report a failed connection at once, one through each node: one switch.
                let failed = #"{"type":"health","epoch":1,"provider":"p2p","media":"failed"}"#
                a.send(failed)
                b.send(failed)
                let movedA = try await a.next("provider"), movedB = try await b.next("provider")
                #expect(movedA["epoch"] == .number(2) && movedB["epoch"] == .number(2))
                a.send(#"{"type":"ping","t":1}"#)
                b.send(#"{"type":"ping","t":1}"#)
                for client in [a, b] {
                    while let m = try await client.nextAny(), m["type"] != .string("pong") {
                        #expect(m["type"] != .string("provider"), "a second switch: \(m)")
                    }
                }
                // An operator's switch through the node that is not home is made by the home.
                let (switched, view) = try await n2.http("POST", "/v1/sessions/s1/provider", body: #"{"name":"p2p"}"#)
                #expect(switched == 200 && view?["provider"]?["epoch"] == .number(3))
                #expect(try await a.next("provider")["epoch"] == .number(3))
                #expect(try await b.next("provider")["epoch"] == .number(3))
                let snapshot = await n1.hub.snapshot(SessionID("s1")!)
                #expect(snapshot?.participants.count == 2)
                #expect(await n2.hub.snapshot(SessionID("s1")!) == nil)
                b.send(#"{"type":"leave"}"#)
                #expect(try await b.closeCode().code == CloseCode.normal)
                #expect(try await a.next("peer-left")["peer"] == wb["participant"])
                try await TestServer.with(n3Config, store: store) { n3 in
                    let c = try await n3.connect()
                    c.send(#"{"type":"join","session":"s1"}"#)
                    let refused = try await c.next("error")
                    #expect(refused["code"] == .string("provider_unavailable"))
                    #expect(refused["message"]?.stringValue?.contains("unreachable") == true)
                }
            }
        }
    }

    /// A participant on the home whose socket drops resumes through the other node (over the link),
    /// and gets what it missed and `resumed: true`, as it would on the home itself.
    @Test func aResumeThroughAnotherNodeGetsWhatItMissed() async throws {
        let store = MemoryStore()
        try await TestServer.with(Self.linked("n1"), store: store) { n1 in
            try await TestServer.with(Self.linked("n2"), store: store) { n2 in
                let (a, wa) = try await n1.join("s1")
                let (b, wb) = try await n1.join("s1")
                _ = try await a.next("peer-joined")
                let aid = wa["participant"]!.stringValue!
                a.send(#"{"type":"ping","t":1}"#)
                let lastSeen = try await a.next("pong")["seq"]!.intValue!
                a.close()
                _ = try await b.next("peer-state")
                b.send(#"{"type":"signal","to":"\#(aid)","data":{"kind":"restart","epoch":1,"note":"while away"}}"#)
                b.send(#"{"type":"ping","t":2}"#)
                _ = try await b.next("pong")
                let a2 = try await n2.connect()
                a2.send(#"{"type":"join","session":"s1","resume":{"participant":"\#(aid)","key":"\#(wa["resumeKey"]!.stringValue!)","lastSeq":\#(lastSeen)}}"#)
                let missed = try await a2.nextAny()!
                #expect(missed["type"] == .string("signal") && missed["data"]?["note"] == .string("while away"))
                #expect(missed["seq"] == .number(Double(lastSeen + 1)))
                let welcome = try await a2.next("welcome")
                #expect(welcome["resumed"] == .bool(true) && welcome["server"]?["node"] == .string("n1"))
                #expect(try await b.next("peer-state")["state"] == .string("active"))
                // And the resumed socket is the participant's: signals reach it over the link.
                b.send(#"{"type":"signal","to":"\#(aid)","data":{"kind":"restart","epoch":1,"note":"after"}}"#)
                #expect(try await a2.next("signal")["data"]?["note"] == .string("after"))
                _ = wb
            }
        }
    }

    /// Only a request that proves the cluster secret, with a time within a minute, opens a link.
    @Test func linksOpenOnlyWithAProof() async throws {
        let secret = LinkSecret(Self.secret)
        try await TestServer.with(TestServer.config { $0.clusterSecret = Self.secret }) { server in
            let now = Int64(Date().timeIntervalSince1970)
            let nonce = [UInt8](repeating: 5, count: 16)
            let hex = LinkSecret.hex
            func query(node: String = "n9", nonce: [UInt8] = nonce, time: Int64 = now, proof: [UInt8]? = nil) -> [String: String] {
                ["node": node, "nonce": hex(nonce), "time": String(time),
                 "proof": hex(proof ?? secret.dialProof(node: node, nonce: nonce, unixTime: time))]
            }
            #expect(server.hub.acceptLink(query: query()) != nil)
            #expect(server.hub.acceptLink(query: query(proof: LinkSecret("another-secret-0123456789").dialProof(node: "n9", nonce: nonce, unixTime: now))) == nil)
            #expect(server.hub.acceptLink(query: query(time: now - 120)) == nil)
            var claimed = query()
            claimed["node"] = "n8"  // a proof made for another name
            #expect(server.hub.acceptLink(query: claimed) == nil)
            #expect(server.hub.acceptLink(query: query(nonce: [1, 2, 3])) == nil)
            #expect(server.hub.acceptLink(query: ["node": "n9"]) == nil)
            // Over HTTP: without a proof the path is not upgraded.
            let (status, _) = try await server.http("GET", "/v1/cluster?node=n9", key: nil)
            #expect(status == 404)
        }
        // A node without a cluster secret opens no link at all.
        try await TestServer.with { server in
            let nonce = [UInt8](repeating: 5, count: 16)
            let time = Int64(Date().timeIntervalSince1970)
            let q = ["node": "n9", "nonce": LinkSecret.hex(nonce), "time": String(time),
                     "proof": LinkSecret.hex(secret.dialProof(node: "n9", nonce: nonce, unixTime: time))]
            #expect(server.hub.acceptLink(query: q) == nil)
        }
    }

    /// A node that drains tells its sockets to resume (4000) and says so in the registry: their
    /// participants meet again through another node at once, while the drained node still runs, at the
    /// same epoch; when it stops it leaves the registry.
    @Test func aDrainingNodesSessionsMoveAtOnce() async throws {
        let store = MemoryStore()
        try await TestServer.with(Self.node("n2"), store: store) { n2 in
            try await TestServer.with(Self.node("n1"), store: store) { n1 in
                let (a, wa) = try await n1.join("s1")
                let (b, _) = try await n1.join("s1")
                n1.hub.drain()
                #expect(try await a.closeCode().code == CloseCode.draining)
                #expect(try await b.closeCode().code == CloseCode.draining)
                #expect(try await n1.http("GET", "/readyz", key: nil).0 == 503)
                try await eventually("the registry to show n1 draining") {
                    try await store.liveNodes().first { $0.name == "n1" }?.state == .draining
                }
                let (_, wa2) = try await n2.join("s1")
                let (_, wb2) = try await n2.join("s1")
                #expect(wa2["server"]?["node"] == .string("n2") && wb2["server"]?["node"] == .string("n2"))
                #expect(wa2["provider"]?["epoch"] == wa["provider"]?["epoch"])
                #expect(try await store.home(SessionID("s1")!)?.generation == 2)
                // The drained node's session decides nothing more: it does not end the session that
                // n2 now serves.
                #expect(try await store.session(SessionID("s1")!)?.provider != nil)
            }
            #expect(try await store.liveNodes().map(\.name) == ["n2"])
            #expect(try await store.home(SessionID("s1")!)?.node == "n2")
        }
    }

    /// A node that cannot renew its lease takes no joins (readyz 503) and decides nothing while its
    /// established session carries on; renewed, it serves and decides again.
    @Test func aNodeWithoutItsLeaseTakesNoJoinsAndComesBack() async throws {
        let store = FaultyStore()
        let config = Self.node("n1") {
            $0.nodeHeartbeatInterval = .milliseconds(100)
            $0.nodeLease = .milliseconds(600)
        }
        try await TestServer.with(config, store: store) { n1 in
            let (a, _) = try await n1.join("s1")
            store.setLeaseFailing(true)
            try await eventually("readyz to say 503") { try await n1.http("GET", "/readyz", key: nil).0 == 503 }
            let b = try await n1.connect()
            b.send(#"{"type":"join","session":"s2"}"#)
            #expect(try await b.next("error")["code"] == .string("provider_unavailable"))
            // Its session passes signals but decides nothing: a failed connection switches nothing.
            let failed = #"{"type":"health","epoch":1,"provider":"p2p","media":"failed"}"#
            a.send(failed)
            a.send(#"{"type":"ping","t":3}"#)
            while let m = try await a.nextAny(), m["type"] != .string("pong") {
                #expect(m["type"] != .string("provider"), "a switch without the lease: \(m)")
            }
            store.setLeaseFailing(false)
            try await eventually("readyz to say 200") { try await n1.http("GET", "/readyz", key: nil).0 == 200 }
            a.send(failed)
            #expect(try await a.next("provider")["epoch"] == .number(2))
            _ = try await n1.join("s2")
        }
    }

    /// A node cut off from the store while another node took one of its sessions over (its lease had
    /// run out there): once the node renews its lease, its sockets of that session are told to resume
    /// (4000), and never does it serve beside the new home.
    @Test func aSessionTakenOverMeanwhileStopsOnItsOldNode() async throws {
        let shared = MemoryStore()
        let cutOff = FaultyStore(inner: shared)
        let short: @Sendable (inout ServerConfig) -> Void = {
            $0.nodeHeartbeatInterval = .milliseconds(100)
            $0.nodeLease = .milliseconds(600)
        }
        let second = Self.node("n2", short)
        try await TestServer.with(Self.node("n1", short), store: cutOff) { n1 in
            try await TestServer.with(second, store: shared) { n2 in
                let (a, _) = try await n1.join("s1")
                cutOff.setLeaseFailing(true)
                // n1's lease runs out in the store: n2 takes s1 over when asked.
                try await eventually("n1's lease to run out") { try await shared.liveNodes().map(\.name) == ["n2"] }
                let (_, welcome) = try await n2.join("s1")
                #expect(welcome["server"]?["node"] == .string("n2"))
                #expect(try await shared.home(SessionID("s1")!)?.generation == 2)
                cutOff.setLeaseFailing(false)
                #expect(try await a.closeCode().code == CloseCode.draining)
                #expect(await n1.hub.snapshot(SessionID("s1")!) == nil)
                #expect(try await shared.home(SessionID("s1")!)?.node == "n2")
            }
        }
    }
}
