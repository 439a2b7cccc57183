import Foundation
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOWebSocket
import TandemProtocol

/// What one run sends.
struct LoadPlan: Sendable {
    var pairs: Int
    /// Relayed (or echoed) `signal` messages per second, over all connections, in the steady phase.
    var rate: Double
    var steady: Duration
    var connectConcurrency: Int
    var candidatesPerBurst = 10
    var heartbeat: Duration = .seconds(5)

    var connections: Int { pairs * 2 }
    /// Time between two steady messages of one connection.
    var interval: Duration { .nanoseconds(Int64(Double(connections) / rate * 1e9)) }
}

/// The figures of one run.
struct LoadResult: Sendable {
    var target: String
    var connections: Int
    var connectFailures: Int
    var joinsPerSecond: Double
    var idleRSSPerConnection: Double
    var burstMessages: Int
    var burstMessagesPerSecond: Double
    var steadyMessages: Int
    var steadyMessagesPerSecond: Double
    var p50: Duration
    var p99: Duration
    var p999: Duration
    var serverCPUPerMessage: Duration
    var serverCPUShare: Double
    var firstError: String?
}

/// A one-shot gate: everybody who waits is let through once it opens, or when their task is cancelled.
final class Gate: Sendable {
    private struct State {
        var open = false
        var next = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = NIOLockedValueBox(State())

    func wait() async {
        let id = state.withLockedValue { s in
            s.next += 1
            return s.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { s -> Bool in
                    if s.open || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    var isOpen: Bool { state.withLockedValue { $0.open } }

    func open() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume() }
    }
}

/// Relay latencies, in nanoseconds.
final class Samples: Sendable {
    private let values = NIOLockedValueBox<[Int64]>([])
    func add(_ v: Int64) { values.withLockedValue { $0.append(v) } }
    func reserve(_ n: Int) { values.withLockedValue { $0.reserveCapacity(n) } }
    var all: [Int64] { values.withLockedValue { $0 } }
}

let benchOrigin = ContinuousClock.now
func nanosSinceOrigin() -> Int64 {
    Int64((ContinuousClock.now - benchOrigin).seconds * 1e9)
}

/// Drives `plan` against one server: Tandem (`echo` false: pairs join one session each and relay to
/// each other) or the bare echo (every message comes back to its sender).
struct LoadRun {
    let plan: LoadPlan
    let server: ServerProcess
    let echo: Bool
    let tls: TLSConfiguration
    let runID: String

    enum Event: Sendable {
        case joined
        case burstDone
        case failed(String)
    }

    /// One side of a call: its ids and what it has received.
    final class Peer: Sendable {
        struct State {
            var peer: String?
            var epoch = 1
            var burstReceived = 0
            var isAnswerer = false
        }
        let state = NIOLockedValueBox(State())
        private let peerKnown = Gate()

        func waitForPeer() async { await peerKnown.wait() }

        func setPeer(_ id: String) {
            state.withLockedValue { $0.peer = id }
            peerKnown.open()
        }
    }

    func run() async -> LoadResult {
        let (events, sink) = AsyncStream<Event>.makeStream()
        let burst = Gate()
        let steady = Gate()
        let finish = Gate()
        let stopAt = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
        let samples = Samples()
        samples.reserve(Int(plan.rate * Double(plan.steady.components.seconds + 1)) + 1024)
        var logger = Logger(label: "bench-client")
        logger.logLevel = .critical
        let url = "wss://127.0.0.1:\(server.port)/v1/signal"
        let config = WebSocketClientConfiguration(maxFrameSize: 1 << 16, autoPing: .disabled, sniHostname: "localhost")
        let rssBefore = server.rss()
        var tasks: [Task<Void, Never>] = []
        var iterator = events.makeAsyncIterator()
        var joined = 0
        var failures = 0
        var firstError: String?

        func take(_ event: Event) {
            switch event {
            case .joined: joined += 1
            case .burstDone: break
            case .failed(let why):
                failures += 1
                if firstError == nil { firstError = why }
            }
        }

        // Connect and join, a bounded number at a time (the TLS handshakes are the cost).
        let joinStart = ContinuousClock.now
        var inFlight = 0
        for index in 0..<plan.connections {
            if inFlight >= plan.connectConcurrency, let event = await iterator.next() {
                take(event)
                inFlight -= 1
            }
            inFlight += 1
            let session = "bench-\(runID)-\(index / 2)"
            let handler = ConnectionScript(
                plan: plan, echo: echo, session: session, sink: sink, burst: burst, steady: steady, finish: finish,
                stopAt: stopAt, samples: samples)
            tasks.append(
                Task {
                    do {
                        try await WebSocketClient.connect(url: url, configuration: config, tlsConfiguration: tls, logger: logger) {
                            inbound, outbound, _ in
                            try await handler.run(inbound: inbound, outbound: outbound)
                        }
                    } catch {
                        sink.yield(.failed("\(error)"))
                    }
                })
        }
        while inFlight > 0, let event = await iterator.next() {
            take(event)
            inFlight -= 1
        }
        let joinElapsed = ContinuousClock.now - joinStart

        // Idle: let the server settle, then weigh it.
        try? await Task.sleep(for: .seconds(3))
        let rssIdle = server.rss()

        // Negotiation burst: offer or answer, candidates, end-of-candidates from every side.
        let burstStart = ContinuousClock.now
        burst.open()
        var done = 0
        while done + failures < joined, let event = await iterator.next() {
            if case .burstDone = event { done += 1 } else { take(event) }
        }
        let burstElapsed = ContinuousClock.now - burstStart
        let burstMessages = done * (plan.candidatesPerBurst + 2)

        // Steady relay with heartbeats.
        let cpuStart = server.cpu()
        let steadyStart = ContinuousClock.now
        stopAt.withLockedValue { $0 = steadyStart + plan.steady }
        steady.open()
        try? await Task.sleep(until: steadyStart + plan.steady)
        let cpuUsed = server.cpu() - cpuStart
        let steadyElapsed = ContinuousClock.now - steadyStart
        // Messages still in flight at the end arrive late; count only those received within the phase.
        let latencies = samples.all.sorted()
        finish.open()
        for task in tasks { await task.value }
        sink.finish()
        while let event = await iterator.next() { take(event) }

        func percentile(_ p: Double) -> Duration {
            guard !latencies.isEmpty else { return .zero }
            return .nanoseconds(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))])
        }
        return LoadResult(
            target: echo ? "echo" : "tandem", connections: plan.connections, connectFailures: failures,
            joinsPerSecond: Double(joined) / joinElapsed.seconds,
            idleRSSPerConnection: Double(rssIdle - rssBefore) / Double(max(1, joined)),
            burstMessages: burstMessages, burstMessagesPerSecond: Double(burstMessages) / burstElapsed.seconds,
            steadyMessages: latencies.count, steadyMessagesPerSecond: Double(latencies.count) / steadyElapsed.seconds,
            p50: percentile(0.5), p99: percentile(0.99), p999: percentile(0.999),
            serverCPUPerMessage: latencies.isEmpty ? .zero : cpuUsed / latencies.count,
            serverCPUShare: cpuUsed.seconds / steadyElapsed.seconds, firstError: firstError)
    }
}

/// What one connection does, phase by phase.
struct ConnectionScript: Sendable {
    let plan: LoadPlan
    let echo: Bool
    let session: String
    let sink: AsyncStream<LoadRun.Event>.Continuation
    let burst: Gate
    let steady: Gate
    let finish: Gate
    let stopAt: NIOLockedValueBox<ContinuousClock.Instant?>
    let samples: Samples

    static let sdp = "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n"
        + String(repeating: "a=fmtp:111 minptime=10;useinbandfec=1\\r\\n", count: 40)
    static let candidate =
        "candidate:842163049 1 udp 1677729535 192.0.2.10 49203 typ srflx raddr 10.0.0.5 rport 49203 generation 0 ufrag 4ZcD network-cost 999"

    func signal(to peer: String, epoch: Int, _ body: String) -> String {
        #"{"type":"signal","to":"\#(peer)","data":{"epoch":\#(epoch),\#(body)}}"#
    }

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let peer = LoadRun.Peer()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await outbound.write(.text(#"{"type":"join","session":"\#(session)","name":"bench"}"#))
                if echo { peer.setPeer("self") }
                await burst.wait()
                await peer.waitForPeer()
                let (to, epoch, first) = peer.state.withLockedValue { s in (s.peer!, s.epoch, !s.isAnswerer) }
                if echo || first {
                    try await sendBurst(outbound, to: to, epoch: epoch, sdpKind: "offer")
                }
                await steady.wait()
                try await sendSteady(outbound, to: to, epoch: epoch)
                await finish.wait()
                try await outbound.close(.normalClosure, reason: nil)
            }
            // Heartbeats from the join on, as a real client sends them: a silent participant times out.
            group.addTask {
                try await Task.sleep(for: plan.heartbeat * Double.random(in: 0.2..<1))
                while !finish.isOpen {
                    // The epoch as the welcome gave it, which arrives after this task starts.
                    let epoch = peer.state.withLockedValue { $0.epoch }
                    let health = #"{"type":"health","epoch":\#(epoch),"provider":"p2p","media":"connected","rttMs":40,"lossPct":0.5,"jitterMs":5,"bitrateKbps":1500}"#
                    try await outbound.write(.text(health))
                    try await Task.sleep(for: plan.heartbeat)
                }
            }
            // Reads until the server closes (after our close).
            for try await message in inbound.messages(maxSize: 1 << 16) {
                guard case .text(let text) = message, let json = try? JSONParser.parse(Array(text.utf8)) else { continue }
                let type = json["type"]?.stringValue
                switch type {
                case "welcome" where !echo:
                    let epoch = json["provider"]?["epoch"]?.intValue ?? 1
                    peer.state.withLockedValue { $0.epoch = epoch }
                    if case .array(let peers)? = json["peers"], let other = peers.first?["id"]?.stringValue {
                        // The later joiner answers.
                        peer.state.withLockedValue { $0.isAnswerer = true }
                        peer.setPeer(other)
                    }
                    sink.yield(.joined)
                case "join" where echo:
                    sink.yield(.joined)
                case "peer-joined":
                    if let id = json["peer"]?["id"]?.stringValue { peer.setPeer(id) }
                case "signal":
                    guard let data = json["data"] else { continue }
                    if let t = data["t"]?.doubleValue {
                        if let stop = stopAt.withLockedValue({ $0 }), ContinuousClock.now < stop {
                            samples.add(nanosSinceOrigin() - Int64(t))
                        }
                        continue
                    }
                    if !echo, data["kind"]?.stringValue == "offer" {
                        let (to, epoch) = peer.state.withLockedValue { ($0.peer!, $0.epoch) }
                        try await sendBurst(outbound, to: to, epoch: epoch, sdpKind: "answer")
                    }
                    let received = peer.state.withLockedValue { s in
                        s.burstReceived += 1
                        return s.burstReceived
                    }
                    if received == plan.candidatesPerBurst + 2 {
                        sink.yield(.burstDone)
                    }
                case "error":
                    sink.yield(.failed("server error: \(text)"))
                default:
                    continue
                }
            }
            if !finish.isOpen { sink.yield(.failed("the server closed the connection")) }
            group.cancelAll()
            try? await group.waitForAll()
        }
    }

    private func sendBurst(_ outbound: WebSocketOutboundWriter, to: String, epoch: Int, sdpKind: String) async throws {
        try await outbound.write(.text(signal(to: to, epoch: epoch, #""kind":"\#(sdpKind)","sdp":"\#(Self.sdp)""#)))
        for i in 0..<plan.candidatesPerBurst {
            try await outbound.write(
                .text(signal(to: to, epoch: epoch, #""kind":"candidate","candidate":"\#(Self.candidate)","sdpMid":"0","sdpMLineIndex":\#(i % 2)"#)))
        }
        try await outbound.write(.text(signal(to: to, epoch: epoch, #""kind":"end-of-candidates""#)))
    }

    /// Steady signals at this connection's share of the rate, spread over the interval.
    private func sendSteady(_ outbound: WebSocketOutboundWriter, to: String, epoch: Int) async throws {
        guard let stop = stopAt.withLockedValue({ $0 }) else { return }
        let interval = plan.interval
        var next = ContinuousClock.now + interval * Double.random(in: 0..<1)
        while next < stop {
            try await Task.sleep(until: next)
            let body = #""kind":"candidate","candidate":"\#(Self.candidate)","sdpMid":"0","sdpMLineIndex":0,"t":\#(nanosSinceOrigin())"#
            try await outbound.write(.text(signal(to: to, epoch: epoch, body)))
            next += interval
        }
    }
}
