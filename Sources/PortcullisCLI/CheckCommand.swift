import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPlugins
import PortcullisRuntime

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the configuration (and plugin rules, key files); print every error and expiry warning.")

    @OptionGroup var options: ConfigOption
    @Flag(name: .customLong("print-effective"), help: "Print the resolved configuration as JSON (defaults filled in, paths resolved against the config file's directory).")
    var printEffective = false
    @Option(name: .customLong("field"), help: ArgumentHelp(
        "Print only the value at this JSON Pointer of the resolved configuration (a string as is, anything else as JSON), e.g. /server/socket.",
        valueName: "pointer"))
    var field: String?
    @Option(name: .customLong("expiry-warning-days"), help: "Warn about API keys that expire within this many days.")
    var expiryWarningDays: Int = APIKeyExpiry.defaultWarningDays

    func run() throws {
        let loaded = try options.load()
        let config = loaded.config
        let now = Int64(time(nil))
        for key in APIKeyExpiry.expiring(config.consumers, now: now, warningDays: max(0, expiryWarningDays)) {
            printError("warning: \(key.describe(now: now))")
        }
        if let field {
            // Scripts read one resolved value this way, without a JSON tool of their own.
            guard case .success(let pointer) = JSONPointer.parse(field) else {
                throw ValidationError("--field takes a JSON Pointer such as /server/socket")
            }
            guard let value = EffectiveConfig.document(of: config, source: loaded.bundle.configBytes).value(at: pointer) else {
                printError("portcullis: no \(field) in the effective configuration")
                throw ExitCode(1)
            }
            print(value.stringValue ?? JSONCodec.serialize(value))
        } else if printEffective {
            print(JSONCodec.serialize(EffectiveConfig.document(of: config, source: loaded.bundle.configBytes), pretty: true))
        } else {
            print("\(options.config): ok (\(config.routes.count) routes, \(config.upstreams.count) upstreams)")
        }
    }
}
