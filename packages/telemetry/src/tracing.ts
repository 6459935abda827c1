import { trace } from "@opentelemetry/api";
import { NodeSDK } from "@opentelemetry/sdk-node";

export { type Span, SpanStatusCode, trace } from "@opentelemetry/api";

/**
 * Starts OpenTelemetry when an OTLP endpoint is configured (the SDK reads the standard
 * OTEL_* variables); without one, the API stays a no-op and spans cost nothing.
 */
export async function startTracing(
  service: string,
  otlpEndpoint: string | undefined,
): Promise<() => Promise<void>> {
  if (!otlpEndpoint) return async () => {};
  const sdk = new NodeSDK({ serviceName: service });
  sdk.start();
  return () => sdk.shutdown();
}

/** The tracer of a service. */
export const tracer = (service: string) => trace.getTracer(service);
