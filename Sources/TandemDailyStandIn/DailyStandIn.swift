import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import TandemProtocol

/// Faults the stand-in injects, for tests and demos of a slow or failing SFU service.
public struct StandInFaults: Sendable, Equatable {
    /// Added before every API answer.
    public var latency: Duration = .zero
    /// The next this many API requests answer `failStatus` with a `server-error` body.
    public var failNext = 0
    public var failStatus = 500

    public init(latency: Duration = .zero, failNext: Int = 0, failStatus: Int = 500) {
        self.latency = latency
        self.failNext = failNext
        self.failStatus = failStatus
    }

    /// What ``validated(latencyMs:failNext:failStatus:)`` accepts, for error messages.
    public static let limits = "failStatus 100-599, failNext 0 or more, latencyMs 0-600000"

    /// The faults, or nil when a value is out of range (a status no HTTP response can carry, a
    /// negative count, a latency past ten minutes).
    public static func validated(latencyMs: Int, failNext: Int, failStatus: Int) -> StandInFaults? {
        guard (100...599).contains(failStatus), failNext >= 0, (0...600_000).contains(latencyMs) else { return nil }
        return StandInFaults(latency: .milliseconds(latencyMs), failNext: failNext, failStatus: failStatus)
    }
}

/// The Daily REST stand-in over HTTP: ``DailyAPI`` at `/v1/...`, plus a control API at `/_standin/...`
/// (faults, a clock to move forward for expiry, and counts of the requests seen).
public final class DailyStandIn: Sendable {
    struct State {
        var api: DailyAPI
        var faults: StandInFaults
        var clockOffset: Double = 0
        var requests: [String: Int] = [:]
    }

    private let state: NIOLockedValueBox<State>

    public init(apiKey: String, roomURLBase: String, faults: StandInFaults = StandInFaults(), requestsPerSecond: Double = 20, deletesPerSecond: Double = 2) {
        state = NIOLockedValueBox(
            State(
                api: DailyAPI(apiKey: apiKey, roomURLBase: roomURLBase, requestsPerSecond: requestsPerSecond, deletesPerSecond: deletesPerSecond),
                faults: faults))
    }

    /// Wall time as the stand-in sees it (moved by `/_standin/clock`).
    public var now: Double { state.withLockedValue { $0.clockOffset } + Date().timeIntervalSince1970 }

    public func setFaults(_ faults: StandInFaults) { state.withLockedValue { $0.faults = faults } }

    /// Where rooms' `url` points (known once the server has its port).
    public func setRoomURLBase(_ base: String) { state.withLockedValue { $0.api.roomURLBase = base } }

    /// Moves the stand-in's clock forward, so rooms and tokens expire without waiting.
    /// The offset is capped at about 31 million years, so that no number of moves overflows a clock reading.
    public func advanceClock(by seconds: Double) { state.withLockedValue { $0.clockOffset = min($0.clockOffset + seconds, 1e15) } }

    /// Requests seen per `METHOD /path-shape` (`GET /rooms/:name`).
    public var requestCounts: [String: Int] { state.withLockedValue { $0.requests } }

    /// Names of the rooms that exist and have not expired.
    public var liveRooms: [String] {
        let now = Int64(now)
        return state.withLockedValue { $0.api.liveRooms(now: now) }
    }

    /// Answers one API request, with the configured faults.
    public func respond(_ request: StandInRequest) async -> StandInResponse {
        let now = self.now
        let (latency, injected) = state.withLockedValue { s -> (Duration, Int?) in
            s.requests[Self.shape(request), default: 0] += 1
            guard s.faults.failNext > 0 else { return (s.faults.latency, nil) }
            s.faults.failNext -= 1
            return (s.faults.latency, s.faults.failStatus)
        }
        if latency > .zero { try? await Task.sleep(for: latency) }
        if let injected { return DailyAPI.error(injected, "server-error", "injected failure") }
        return state.withLockedValue { $0.api.handle(request, now: now) }
    }

    static func shape(_ request: StandInRequest) -> String {
        let parts = request.path.split(separator: "/").map(String.init)
        let shaped = parts.enumerated().map { $0.offset == 1 ? (parts[0] == "rooms" ? ":name" : ":token") : $0.element }
        return "\(request.method) /" + shaped.joined(separator: "/")
    }

    // MARK: HTTP

    public func register(on router: Router<BasicRequestContext>) {
        for method in [HTTPRequest.Method.get, .post, .delete] {
            router.on("/v1/**", method: method) { request, context in
                let body = try await request.body.collect(upTo: 1 << 20)
                let path = String(request.uri.path.dropFirst(3))
                let answer = await self.respond(
                    StandInRequest(
                        method: method.rawValue, path: path, authorization: request.headers[.authorization],
                        body: Array(body.readableBytesView)))
                return Self.response(answer)
            }
        }
        router.post("/_standin/faults") { request, context in
            let body = try await request.body.collect(upTo: 1 << 16)
            guard let json = try? JSONParser.parse(Array(body.readableBytesView)), json.isObject else {
                return Self.response(DailyAPI.error(400, "json-parsing-error", "the request body is not a JSON object"))
            }
            let (latencyMs, failNext, failStatus) = (json["latencyMs"]?.intValue ?? 0, json["failNext"]?.intValue ?? 0, json["failStatus"]?.intValue ?? 500)
            guard let faults = StandInFaults.validated(latencyMs: latencyMs, failNext: failNext, failStatus: failStatus) else {
                return Self.response(DailyAPI.invalid(StandInFaults.limits))
            }
            self.setFaults(faults)
            return Self.response(StandInResponse(status: 200, body: json))
        }
        router.post("/_standin/clock") { request, context in
            let body = try await request.body.collect(upTo: 1 << 16)
            // Within a century, so that the clock stays a valid timestamp.
            guard let advance = (try? JSONParser.parse(Array(body.readableBytesView)))?["advanceSeconds"]?.doubleValue,
                (0...3_155_760_000).contains(advance)
            else {
                return Self.response(DailyAPI.invalid("give advanceSeconds, from 0 to 3155760000"))
            }
            self.advanceClock(by: advance)
            return Self.response(StandInResponse(status: 200, body: .object(["now": .number(self.now)])))
        }
        router.get("/_standin/stats") { _, _ in
            let counts = self.requestCounts.mapValues { JSON.number(Double($0)) }
            return Self.response(
                StandInResponse(status: 200, body: .object(["requests": .object(counts), "rooms": .array(self.liveRooms.map(JSON.string))])))
        }
    }

    static func response(_ answer: StandInResponse) -> Response {
        Response(
            status: HTTPResponse.Status(code: answer.status), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body.encoded)))
    }

    /// `http://HOST:PORT`, the stand-in's address (its API is below `/v1`, rooms' pages below `/rooms`).
    public static func address(host: String, port: Int) -> String {
        "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// A stand-in server on `host:port`; `onRunning` gets the bound port (useful with port 0).
    public static func application(
        host: String, port: Int, apiKey: String, faults: StandInFaults = StandInFaults(), requestsPerSecond: Double = 20,
        deletesPerSecond: Double = 2, logger: Logger, onRunning: @escaping @Sendable (Int, DailyStandIn) async -> Void = { _, _ in }
    ) -> any ApplicationProtocol {
        let base: @Sendable (Int) -> String = { port in address(host: host, port: port) + "/rooms" }
        let standIn = DailyStandIn(
            apiKey: apiKey, roomURLBase: base(port), faults: faults, requestsPerSecond: requestsPerSecond, deletesPerSecond: deletesPerSecond)
        let router = Router()
        standIn.register(on: router)
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "tandem-daily-standin"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                standIn.setRoomURLBase(base(bound))
                await onRunning(bound, standIn)
            }, logger: logger)
        return app
    }

    /// Runs a stand-in on a free loopback port for the length of `body`, which gets it and its API's
    /// base URL (`http://127.0.0.1:PORT/v1`).
    public static func withRunning(
        apiKey: String, requestsPerSecond: Double = 1000, deletesPerSecond: Double = 1000,
        _ body: @Sendable (DailyStandIn, String) async throws -> Void
    ) async throws {
        var logger = Logger(label: "tandem.daily-standin")
        logger.logLevel = .warning
        let (ports, continuation) = AsyncStream<(Int, DailyStandIn)>.makeStream()
        let app = application(
            host: "127.0.0.1", port: 0, apiKey: apiKey, requestsPerSecond: requestsPerSecond, deletesPerSecond: deletesPerSecond,
            logger: logger
        ) { port, standIn in continuation.yield((port, standIn)) }
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            guard let (port, standIn) = await iterator.next() else { return }
            do {
                try await body(standIn, address(host: "127.0.0.1", port: port) + "/v1")
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}
