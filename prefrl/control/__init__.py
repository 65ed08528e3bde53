"""Control tasks: gymnasium environments (MuJoCo, Atari), SB3 PPO on a learned reward, presets."""
