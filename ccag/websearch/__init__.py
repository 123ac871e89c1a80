"""Anthropic's ``web_search`` server tool, run by ccag for Bedrock.

Bedrock does not run Anthropic's server tools. When a request offers
``web_search_*``, ccag gives the model an ordinary tool of the same name,
runs each search the model asks for through a configured provider, feeds the
results back, and answers the client with the blocks Anthropic's API would
send (``server_tool_use``, ``web_search_tool_result``, then the model's text).

Modules: :mod:`.tool` (detect the tool, rewrite requests and history; pure),
:mod:`.assemble` (events into a message; pure), :mod:`.merge` (several model
calls into one response; pure), :mod:`.providers` (one module per search
service, each a pure request builder and response parser), :mod:`.http` (a
small HTTP/1.1 client), :mod:`.settings` (which provider serves whom),
:mod:`.search` (run one search), :mod:`.loop` (the interception loop).
"""
