import TandemDailyStandIn
import TandemSFU

/// The Daily stand-in on a loopback port for the length of `body`.
func withStandIn(
    apiKey: String = "key-1", requestsPerSecond: Double = 1000, _ body: @Sendable (DailyStandIn, String) async throws -> Void
) async throws {
    try await DailyStandIn.withRunning(apiKey: apiKey, requestsPerSecond: requestsPerSecond, body)
}

/// A client for the stand-in with fast retries, so tests of backoff take milliseconds.
func client(_ base: String, apiKey: String = "key-1", configure: (inout DailyConfiguration) -> Void = { _ in }) -> DailyClient {
    var c = DailyConfiguration(baseURL: base, apiKey: apiKey)
    c.retry.base = .milliseconds(5)
    c.retry.cap = .milliseconds(40)
    c.requestsPerSecond = 1000
    c.deletesPerSecond = 1000
    configure(&c)
    return DailyClient(configuration: c)
}
