// Types of the AudioWorkletGlobalScope, for `// @ts-check` in the worklet scripts (the DOM
// library TypeScript ships does not describe the worklet scope).
declare const sampleRate: number;
declare const currentFrame: number;
declare const currentTime: number;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}
declare function registerProcessor(
  name: string,
  processorCtor: new (options: any) => AudioWorkletProcessor,
): void;
