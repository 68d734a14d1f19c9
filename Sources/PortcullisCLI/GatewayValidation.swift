import PortcullisCore

/// Everything `check` and `reload` validate before anything changes.
enum GatewayValidation {
    static func validate(configPath: String) throws(ConfigErrors) -> GatewayConfig {
        try ConfigLoader.load(path: configPath)
    }
}
