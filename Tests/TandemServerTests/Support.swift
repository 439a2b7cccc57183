import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOWebSocket
import ServiceLifecycle
import TandemArbiter
import TandemProtocol
import TandemStore
import Testing

@testable import TandemServer

struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `body` with a deadline; throws if it does not finish in time. Deadlines here only bound a test
/// that would otherwise hang; nothing asserts on how long anything took.
func within<T: Sendable>(_ seconds: Double = 10, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw TestTimeout(what: what)
        }
        group.cancelAll()
        return value
    }
}

/// A running in-process server on a free loopback port.
struct TestServer {
    let port: Int
    let hub: SignalingHub
    let config: ServerConfig
    var certificates: CertificateReloader? = nil

    var wsURL: String { (config.tls == .disabled ? "ws" : "wss") + "://127.0.0.1:\(port)/v1/signal" }
    var httpBase: String { (config.tls == .disabled ? "http" : "https") + "://127.0.0.1:\(port)" }

    static func config(_ edit: (inout ServerConfig) -> Void = { _ in }) -> ServerConfig {
        var c = ServerConfig()
        c.dev = true
        c.host = "127.0.0.1"
        c.port = 0
        c.secret = "test-secret"
        c.apiKey = "test-key"
        c.node = "test-node"
        c.store = .memory
        edit(&c)
        return c
    }

    /// Starts a server, runs `body`, and shuts the server down.
    static func with(
        _ config: ServerConfig = config(), store: (any SessionStore)? = nil, _ body: @escaping @Sendable (TestServer) async throws -> Void
    ) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let built = try buildServer(config, logger: logger, store: store) { port in portContinuation.yield(port) }
        let group = ServiceGroup(services: [built.application], gracefulShutdownSignals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = portStream.makeAsyncIterator()
            guard let port = await iterator.next() else { throw TestTimeout(what: "server start") }
            do {
                try await body(TestServer(port: port, hub: built.hub, config: config, certificates: built.certificates))
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// Connects a test client.
    func connect(tls: TLSConfiguration? = nil) async throws -> WSTestClient {
        try await WSTestClient.connect(url: wsURL, tls: tls)
    }

    /// Connects and joins; returns the client and its welcome.
    func join(_ session: String = "s1", extra: String = "") async throws -> (WSTestClient, JSON) {
        let client = try await connect()
        client.send(#"{"type":"join","session":"\#(session)"\#(extra)}"#)
        let welcome = try await client.next("welcome")
        return (client, welcome)
    }

    /// One HTTP request with the response's headers and raw body.
    func fetch(_ method: String, _ path: String, headers: [String: String] = [:], body: String? = nil) async throws -> (
        status: Int, headers: [String: String], body: Data
    ) {
        var request = URLRequest(url: URL(string: httpBase + path)!)
        request.httpMethod = method
        request.cachePolicy = .reloadIgnoringLocalCacheData
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for case let (name as String, value as String) in http.allHeaderFields { fields[name.lowercased()] = value }
        return (http.statusCode, fields, data)
    }

    /// One admin API request (with `key` as the bearer, if any); returns status and the JSON body.
    func http(_ method: String, _ path: String, key: String? = "test-key", body: String? = nil) async throws -> (Int, JSON?) {
        var headers: [String: String] = [:]
        if let key { headers["Authorization"] = "Bearer \(key)" }
        if body != nil { headers["Content-Type"] = "application/json" }
        let r = try await fetch(method, path, headers: headers, body: body)
        return (r.status, try? JSONParser.parse(Array(r.body)))
    }
}

/// A WebSocket client for tests: queue frames to send, await messages as they arrive, see the close code.
final class WSTestClient: Sendable {
    enum Outgoing: Sendable {
        case text(String)
        case binary([UInt8])
        case close
    }

    private let outgoing: AsyncStream<Outgoing>.Continuation
    private let incoming: Inbox
    private let task: Task<WebSocketCloseFrame?, any Error>

    private init(outgoing: AsyncStream<Outgoing>.Continuation, incoming: Inbox, task: Task<WebSocketCloseFrame?, any Error>) {
        self.outgoing = outgoing
        self.incoming = incoming
        self.task = task
    }

    static func connect(url: String, tls: TLSConfiguration? = nil, sniHostname: String? = nil) async throws -> WSTestClient {
        let (outStream, outContinuation) = AsyncStream<Outgoing>.makeStream()
        let inbox = Inbox()
        let inContinuation = inbox
        let (connected, connectedContinuation) = AsyncStream<Void>.makeStream()
        var logger = Logger(label: "ws-test-client")
        logger.logLevel = .critical
        let task = Task {
            defer {
                inContinuation.finish()
                connectedContinuation.finish()
            }
            return try await WebSocketClient.connect(
                url: url, configuration: .init(maxFrameSize: 1 << 20, autoPing: .disabled, sniHostname: sniHostname), tlsConfiguration: tls, logger: logger
            ) { inbound, outbound, _ in
                connectedContinuation.yield()
                connectedContinuation.finish()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            if case .text(let text) = message { inContinuation.yield(text) }
                        }
                    }
                    group.addTask {
                        for await item in outStream {
                            switch item {
                            case .text(let text): try await outbound.write(.text(text))
                            case .binary(let bytes): try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                            case .close:
                                try await outbound.close(.normalClosure, reason: nil)
                                return
                            }
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
        let opened = try await within(10, "connect") {
            for await _ in connected { return true }
            return false
        }
        guard opened else {
            _ = try await task.value
            throw TestTimeout(what: "a connection that closed at once")
        }
        return WSTestClient(outgoing: outContinuation, incoming: inbox, task: task)
    }

    func send(_ text: String) { outgoing.yield(.text(text)) }
    func sendBinary(_ bytes: [UInt8]) { outgoing.yield(.binary(bytes)) }

    /// Closes cleanly, without `leave` (as a dropped network would look to the server, less the timeout).
    func close() { outgoing.yield(.close) }

    /// Drops the connection at once.
    func drop() { task.cancel() }

    /// The next message, whatever its type; nil when the socket has closed.
    func nextAny(timeout: Double = 10) async throws -> JSON? {
        let inbox = incoming
        return try await within(timeout, "a message") {
            guard let text = await inbox.next() else { return JSON?.none }
            return try JSONParser.parse(Array(text.utf8))
        }
    }

    /// The next message of `type`, skipping others (pongs, quality, …) on the way.
    func next(_ type: String, timeout: Double = 10) async throws -> JSON {
        while true {
            guard let message = try await nextAny(timeout: timeout) else { throw TestTimeout(what: "\(type) (socket closed)") }
            if message["type"]?.stringValue == type { return message }
        }
    }

    /// Every message until the socket closes, then the close code the server sent.
    func closeCode(timeout: Double = 10) async throws -> (code: UInt16?, messages: [JSON]) {
        var messages: [JSON] = []
        while let m = try await nextAny(timeout: timeout) { messages.append(m) }
        let frame = try await task.value
        let code: UInt16? = frame.map { UInt16(webSocketErrorCode: $0.closeCode) }
        return (code, messages)
    }
}

extension UInt16 {
    init(webSocketErrorCode code: WebSocketErrorCode) {
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: code)
        self = buffer.readInteger(as: UInt16.self) ?? 0
    }
}

/// Messages received and not yet taken, with one waiting reader at a time.
final class Inbox: Sendable {
    private struct State {
        var messages: [String] = []
        var finished = false
        var waiter: CheckedContinuation<String?, Never>?
    }

    private let state = NIOLockedValueBox(State())

    func yield(_ text: String) {
        let waiter = state.withLockedValue { s -> CheckedContinuation<String?, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.messages.append(text)
            return nil
        }
        waiter?.resume(returning: text)
    }

    func finish() {
        let waiter = state.withLockedValue { s -> CheckedContinuation<String?, Never>? in
            s.finished = true
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume(returning: nil)
    }

    func next() async -> String? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<String?, Never>) in
                let immediate: String?? = state.withLockedValue { s in
                    if !s.messages.isEmpty { return .some(s.messages.removeFirst()) }
                    if s.finished { return .some(nil) }
                    s.waiter = c
                    return .none
                }
                if let immediate { c.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { s -> CheckedContinuation<String?, Never>? in
                let w = s.waiter
                s.waiter = nil
                return w
            }
            waiter?.resume(returning: nil)
        }
    }
}

/// A memory store whose calls fail on demand, for the paths a store error takes, and that counts the
/// health samples written.
final class FaultyStore: SessionStore {
    let inner: MemoryStore

    /// `inner` may be shared with other nodes' stores, as one database is.
    init(inner: MemoryStore = MemoryStore()) { self.inner = inner }
    private let failing = NIOLockedValueBox(false)

    /// While true every call throws.
    func setFailing(_ value: Bool) { failing.withLockedValue { $0 = value } }

    private func check() throws {
        if failing.withLockedValue({ $0 }) { throw StoreError(.query, "injected failure") }
    }

    func claimProvider(_ session: SessionID, proposed: ProviderName, atMs: Int64) async throws -> ProviderState {
        try check()
        return try await inner.claimProvider(session, proposed: proposed, atMs: atMs)
    }
    func compareAndSetProvider(_ session: SessionID, expectedEpoch: Int, new: ProviderName, reason: SwitchReason, atMs: Int64) async throws -> Bool {
        try check()
        return try await inner.compareAndSetProvider(session, expectedEpoch: expectedEpoch, new: new, reason: reason, atMs: atMs)
    }
    func lastEpoch(_ session: SessionID) async throws -> Int { try check(); return try await inner.lastEpoch(session) }
    func session(_ session: SessionID) async throws -> SessionRecord? { try check(); return try await inner.session(session) }
    func endSession(_ session: SessionID, atMs: Int64) async throws { try check(); try await inner.endSession(session, atMs: atMs) }
    func scores() async throws -> ProviderScores { try check(); return try await inner.scores() }
    func adjustScore(_ provider: ProviderName, delta: Int) async throws -> ProviderScores {
        try check()
        return try await inner.adjustScore(provider, delta: delta)
    }
    func upsertPresence(_ session: SessionID, _ record: PresenceRecord) async throws { try check(); try await inner.upsertPresence(session, record) }
    func removePresence(_ session: SessionID, _ participant: ParticipantID) async throws {
        try check()
        try await inner.removePresence(session, participant)
    }
    func presence(_ session: SessionID) async throws -> [PresenceRecord] { try check(); return try await inner.presence(session) }
    func recordHealth(_ session: SessionID, _ sample: HealthSample) async throws {
        try check()
        healthRecords.withLockedValue { $0 += 1 }
        try await inner.recordHealth(session, sample)
    }
    /// Health samples written so far.
    let healthRecords = NIOLockedValueBox(0)
    func latestHealth(_ session: SessionID) async throws -> [ParticipantID: HealthSample] { try check(); return try await inner.latestHealth(session) }
    func recordAlert(_ session: SessionID, _ alert: AlertRecord) async throws { try check(); try await inner.recordAlert(session, alert) }
    func alerts(_ session: SessionID) async throws -> [AlertRecord] { try check(); return try await inner.alerts(session) }
    func appendMessages(_ session: SessionID, _ messages: [LoggedMessage]) async throws { try check(); try await inner.appendMessages(session, messages) }
    func messages(_ session: SessionID, _ participant: ParticipantID, after seq: Int) async throws -> [[UInt8]]? {
        try check()
        return try await inner.messages(session, participant, after: seq)
    }
    func dropMessages(_ session: SessionID, _ participant: ParticipantID) async throws { try check(); try await inner.dropMessages(session, participant) }
    func cleanup(nowMs: Int64, policy: RetentionPolicy) async throws -> CleanupReport { try check(); return try await inner.cleanup(nowMs: nowMs, policy: policy) }
    func endSessionsLeftOpen(atMs: Int64) async throws -> Int { try check(); return try await inner.endSessionsLeftOpen(atMs: atMs) }
    // The node's lease fails only with `setLeaseFailing`: the other failures are of the session data.
    func heartbeat(_ node: NodeRecord, leaseMs: Int64) async throws {
        if leaseFailing.withLockedValue({ $0 }) { throw StoreError(.query, "injected failure") }
        try await inner.heartbeat(node, leaseMs: leaseMs)
    }
    func liveNodes() async throws -> [NodeRecord] { try await inner.liveNodes() }
    func removeNode(_ name: String) async throws { try await inner.removeNode(name) }
    func acquireHome(_ session: SessionID, node: String) async throws -> SessionHome? {
        try check()
        return try await inner.acquireHome(session, node: node)
    }
    func releaseHome(_ session: SessionID, node: String) async throws { try await inner.releaseHome(session, node: node) }
    func home(_ session: SessionID) async throws -> SessionHome? { try await inner.home(session) }
    private let leaseFailing = NIOLockedValueBox(false)
    /// While true the node's lease is not renewed.
    func setLeaseFailing(_ value: Bool) { leaseFailing.withLockedValue { $0 = value } }
}

extension TestServer {
    /// One sample of `/metrics` by its full name (labels included), 0 when absent.
    func metric(_ name: String) async throws -> Double {
        let text = String(decoding: try await fetch("GET", "/metrics").body, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1)) ?? .nan
        }
        return 0
    }
}

/// A plain TCP client for tests that speak bytes, not a protocol library: its blocking calls run on
/// threads of their own (`offPool`), never on the two threads every test's server shares.
enum RawTCP {
    /// A blocking TCP socket connected to 127.0.0.1:`port`.
    static func connect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(result == 0, "connect: errno \(errno)")
        return fd
    }

    /// Runs blocking socket calls on a thread of their own: never on the two threads every test's
    /// server shares.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { done in Thread { done.resume(returning: body()) }.start() }
    }

    enum Read: Equatable { case bytes([UInt8]), closed, nothing }

    /// What the socket gives within `seconds`: some bytes, the end of the stream, or nothing.
    static func read(_ fd: Int32, within seconds: Double) async -> Read {
        await offPool { readNow(fd, within: seconds) }
    }

    static func readNow(_ fd: Int32, within seconds: Double) -> Read {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(seconds * 1000)) == 1 else { return .nothing }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? .bytes(Array(buffer.prefix(n))) : .closed
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) -> Int { bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
}
