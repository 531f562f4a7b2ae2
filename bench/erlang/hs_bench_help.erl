%% Hot loops for compare.escript. Compiled (BEAM/JIT) at startup, never
%% run by the escript interpreter.
-module(hs_bench_help).
-export([spawn_exit/1, spawn_exit_poll/1, idle/0, spawn_idle/2, stop_idle/1,
         msg_throughput/1, timed_calls/2, calls/2, casts/2,
         start_many/3, upgrade/3, now_ns/0]).

now_ns() -> erlang:monotonic_time(nanosecond).

%% --- spawn_exit_rate ------------------------------------------------------
%% Spawn N processes that return immediately; wait for all N 'DOWN's.
%% Returns elapsed ns.  Must run in a process with an empty mailbox.
spawn_exit(N) ->
    T0 = now_ns(),
    spawn_mon(N),
    wait_down(N),
    now_ns() - T0.

spawn_mon(0) -> ok;
spawn_mon(N) ->
    _ = spawn_monitor(fun() -> ok end),
    spawn_mon(N - 1).

%% Variant without monitors: plain spawn, then poll the process count until
%% it is back to where it was.  Only reported on stderr.
spawn_exit_poll(N) ->
    Base = erlang:system_info(process_count),
    T0 = now_ns(),
    spawn_plain(N),
    wait_count(Base),
    now_ns() - T0.

spawn_plain(0) -> ok;
spawn_plain(N) ->
    _ = spawn(fun() -> ok end),
    spawn_plain(N - 1).

wait_count(Base) ->
    case erlang:system_info(process_count) of
        C when C =< Base -> ok;
        _ -> erlang:yield(), wait_count(Base)
    end.

wait_down(0) -> ok;
wait_down(N) ->
    receive {'DOWN', _, process, _, _} -> wait_down(N - 1) end.

%% --- idle processes -------------------------------------------------------
idle() -> receive stop -> ok end.

%% Pids go to an ETS table, so they are not counted as process memory.
spawn_idle(0, _Tab) -> ok;
spawn_idle(N, Tab) ->
    P = spawn(fun idle/0),
    ets:insert(Tab, {P}),
    spawn_idle(N - 1, Tab).

stop_idle(Tab) ->
    ets:foldl(fun({P}, A) -> P ! stop, A end, ok, Tab).

%% --- message_throughput ---------------------------------------------------
msg_throughput(N) ->
    Self = self(),
    R = spawn(fun() -> recv_loop(N), Self ! {done, self()} end),
    T0 = now_ns(),
    send_loop(R, N),
    receive {done, R} -> ok end,
    now_ns() - T0.

recv_loop(0) -> ok;
recv_loop(N) -> receive {msg, _} -> recv_loop(N - 1) end.

send_loop(_R, 0) -> ok;
send_loop(R, N) -> R ! {msg, N}, send_loop(R, N - 1).

%% --- gen_server clients ---------------------------------------------------
timed_calls(S, N) -> timed_calls(S, N, []).
timed_calls(_S, 0, Acc) -> Acc;
timed_calls(S, N, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    pong = gen_server:call(S, ping),
    T1 = erlang:monotonic_time(nanosecond),
    timed_calls(S, N - 1, [T1 - T0 | Acc]).

calls(_S, 0) -> ok;
calls(S, N) -> pong = gen_server:call(S, ping), calls(S, N - 1).

casts(_S, 0) -> ok;
casts(S, N) -> gen_server:cast(S, inc), casts(S, N - 1).

%% --- upgrade --------------------------------------------------------------
%% Start N servers of Mod (state = index I); returns [{I, Pid}].
start_many(_Mod, 0, Acc) -> Acc;
start_many(Mod, N, Acc) ->
    {ok, P} = Mod:start(N),
    start_many(Mod, N - 1, [{N, P} | Acc]).

%% Release-handler-style upgrade: suspend all, load new code,
%% change_code all, resume all.  Returns elapsed ns.
upgrade(IPs, Mod, NewBin) ->
    T0 = now_ns(),
    lists:foreach(fun({_, P}) -> ok = sys:suspend(P) end, IPs),
    {module, Mod} = code:load_binary(Mod, atom_to_list(Mod) ++ ".erl", NewBin),
    lists:foreach(fun({_, P}) -> ok = sys:change_code(P, Mod, 1, []) end, IPs),
    lists:foreach(fun({_, P}) -> ok = sys:resume(P) end, IPs),
    now_ns() - T0.
