"""Browser end-to-end tests: the demo page in headless Chromium against ``voicecore serve``.

A package (not a bare folder of tests) so that its ``conftest`` and helper modules do not
shadow the root ``conftest`` that other test modules import from.
"""
