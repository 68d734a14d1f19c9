import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the master, its workers (state, requests, RSS), the generation and the rate table.")

    @OptionGroup var options: ConfigOption
    @Flag(help: "Print the report as JSON.") var json = false
    /// The pointer is into the `--json` report, e.g. /workers/0/pid.
    @OptionGroup var field: FieldOption
    @Option(name: .customLong("expiry-warning-days"), help: "List API keys that expire within this many days.")
    var expiryWarningDays: Int = APIKeyExpiry.defaultWarningDays

    func run() throws {
        guard let report = StatusReport(paths: MasterControl(configPath: options.config).paths, keyWarningDays: expiryWarningDays) else {
            if field.field != nil {
                printError("portcullis: not running")
            } else {
                print(json ? "{\"running\":false}" : "not running")
            }
            throw ExitCode(3)
        }
        if field.field != nil {
            try field.printValue(of: .object(report.document), documentName: "the status report")
        } else {
            print(json ? JSONCodec.serialize(.object(report.document)) : report.text)
        }
    }
}
