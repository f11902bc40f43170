"""Vision encoders and the types that flow out of them.

Import from the submodules (`encoders.tokens.VisualTokens`, `encoders.signals.CodecSignals`,
`encoders.errors.VidsieveError`, ...). The package itself imports nothing, so a command that only
needs the error types does not pay for importing torch.
"""
