#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noinput
%%
%% The Erlang/OTP echo server of the TCP measures (tcp_echo_rtt, tcp_echo_throughput):
%% gen_tcp with {packet, 4}, one process per connection in {active, once}, the socket
%% handed to it with controlling_process (the ranch pattern). Prints the port it listens
%% on (127.0.0.1), then serves until its standard input closes.
main(_) ->
    {ok, L} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false}, {reuseaddr, true},
                                 {nodelay, true}, {backlog, 1024}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    io:format("~p~n", [Port]),
    spawn(fun() -> accept(L) end),
    wait_stdin(),
    halt(0).

wait_stdin() ->
    P = open_port({fd, 0, 1}, [in, binary, eof]),
    wait_eof(P).

wait_eof(P) ->
    receive
        {P, eof} -> ok;
        {P, _} -> wait_eof(P)
    end.

accept(L) ->
    {ok, S} = gen_tcp:accept(L),
    Pid = spawn(fun() -> receive go -> ok end, inet:setopts(S, [{active, once}]), loop(S) end),
    ok = gen_tcp:controlling_process(S, Pid),
    Pid ! go,
    accept(L).

loop(S) ->
    receive
        {tcp, S, Data} ->
            ok = gen_tcp:send(S, Data),
            ok = inet:setopts(S, [{active, once}]),
            loop(S);
        {tcp_closed, S} ->
            ok;
        {tcp_error, S, _} ->
            ok
    end.
