import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import TandemDailyStandIn
import TandemProtocol
import Testing

/// The stand-in's control endpoints are unauthenticated: what they refuse must not take it down.
@Suite("Daily stand-in: control endpoints")
struct StandInControlTests {
    func post(_ url: String, _ body: String) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 16)
        return Int(response.status.code)
    }

    @Test func outOfRangeFaultsAndClockMovesAreRefused() async throws {
        try await withStandIn { standIn, base in
            let control = String(base.dropLast(3)) + "/_standin"
            for (path, body) in [
                ("/faults", #"{"failStatus":5000,"failNext":1}"#), ("/faults", #"{"failNext":-1}"#), ("/faults", #"{"latencyMs":1e12}"#),
                ("/clock", #"{"advanceSeconds":1e19}"#), ("/clock", #"{"advanceSeconds":-1e19}"#), ("/clock", "[]"),
            ] {
                let status = try await post(control + path, body)
                #expect(status == 400, "\(path) \(body)")
            }
            // Nothing was changed, and the API still answers.
            let answer = await standIn.respond(StandInRequest(method: "GET", path: "/rooms/none", authorization: "Bearer key-1"))
            #expect(answer.status == 404)
            let moved = try await post(control + "/clock", #"{"advanceSeconds":60}"#)
            #expect(moved == 200)
        }
    }
}
